"""The web console in a real browser: Debian's Chromium driven by Playwright, against the service
run as a subprocess. A consumer runs the main job from the console; an operator makes a tenant
and a key; mistakes show the problem's title and detail.

With PROVIDER_CONSOLE_SCREENSHOTS=DIR the tests also save screenshots of the main pages there
(`make console-screenshots` writes docs/console/)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ADMIN_KEY, REPO, WAIT_SECONDS
from tests.live_service import free_port, request, serve

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = os.environ.get("PROVIDER_CONSOLE_SCREENSHOTS")
# As this machine's Chromium needs them: no sandbox as root, and no calls to Google's services.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = WAIT_SECONDS * 1000


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if os.environ.get("PROVIDER_TEST_BROWSER", "").lower() == "off":
        pytest.skip("PROVIDER_TEST_BROWSER=off")
    if not CHROMIUM.exists():
        subprocess.run(["bash", str(REPO / "tests" / "services" / "chromium.sh")], check=True, timeout=900)
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("console")
    assets = root / "assets"
    assets.mkdir()
    shutil.copy(REPO / "config" / "assets" / "dummy.yaml", assets)
    notifications = {
        "allowed_networks": ["127.0.0.1/32"],
        "allow_http": True,
        "max_attempts": 1,
        "poll_seconds": 0.2,
    }
    with serve(root, assets={"directory": str(assets)}, notifications=notifications) as url:
        yield url


@pytest.fixture
def page(browser, service: str):  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 1280, "height": 860}, accept_downloads=True)
    context.set_default_timeout(TIMEOUT_MS)
    opened = context.new_page()
    yield opened
    context.close()


def open_streams(service: str) -> float:
    """How many event streams the service holds open (its metric)."""
    with urllib.request.urlopen(service + "/metrics") as response:
        text = response.read().decode()
    return float(re.search(r"^provider_event_streams_open\s+(\S+)$", text, re.MULTILINE).group(1))  # type: ignore[union-attr]


def shot(page, name: str) -> None:  # type: ignore[no-untyped-def]
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"), full_page=True)


def sign_in(page, service: str, key: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(service + "/")  # the root sends people to the console
    assert page.url == service + "/console/#/signin"
    page.get_by_label("API key or workspace token").fill(key)
    page.get_by_role("button", name="Sign in").click()


def consumer_key(service: str, participant: str, name: str = "Alice") -> str:
    tenant = request(
        f"{service}/api/v1/tenants", "POST", {"participant_id": participant, "display_name": name}
    )
    return str(
        request(f"{service}/api/v1/tenants/{tenant['id']}/api-keys", "POST", {"name": "browser"})["key"]
    )


def test_a_consumer_runs_the_main_job_from_the_console(page, service: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    key = consumer_key(service, "did:web:alice.example")
    sign_in(page, service, key)
    expect(page.get_by_role("heading", name="Workspaces", level=1)).to_be_visible()
    expect(page.get_by_text("No workspaces yet")).to_be_visible()  # what to do next
    page.get_by_label("Name").fill("study")
    page.get_by_label("Labels").fill("project=console")
    page.get_by_role("button", name="Create workspace").click()
    expect(page.get_by_role("heading", name="Workspace study")).to_be_visible()
    # Upload a file; the progress line says when it is done.
    data = os.urandom(150_000)
    (tmp_path / "input.bin").write_bytes(data)
    page.get_by_label("Files").set_input_files(str(tmp_path / "input.bin"))
    expect(page.get_by_text("1 of 1 files uploaded")).to_be_visible()
    expect(page.get_by_role("cell", name="input.bin", exact=True)).to_be_visible()
    expect(page.locator(".meta")).to_contain_text("146.5 KiB of 10.0 GiB · 1 objects")
    shot(page, "workspace")
    # Run dummy on it from a form built from the asset's inputs and parameters.
    page.get_by_role("link", name="Run an asset on it").click()
    expect(page.get_by_role("heading", name="Run an asset")).to_be_visible()
    page.get_by_label("source (file)").fill("input.bin")
    page.get_by_label("SLEEP_SECONDS").fill("2")
    shot(page, "run")
    page.get_by_role("button", name="Start").click()
    # The execution page follows it live: a state before the end, then COMPLETE, no reload.
    status = page.locator(".status")
    expect(status).to_have_text(re.compile(r"State: (QUEUED|INITIALIZING|RUNNING)"))
    url_before = page.url
    expect(status).to_have_text("State: COMPLETE")
    assert page.url == url_before
    steps = page.locator(".timeline li")
    expect(steps.first).to_contain_text("QUEUED")
    expect(steps.last).to_contain_text("COMPLETE")
    expect(steps.filter(has_text="RUNNING")).to_have_count(1)
    expect(page.get_by_label("Worker log")).to_contain_text("dummy: copied 150000 bytes")
    digest = page.locator("code.digest")
    expect(digest).to_have_text(re.compile("^[0-9a-f]{64}$"))
    shot(page, "execution")
    with page.expect_download() as download:
        page.get_by_role(
            "button", name=re.compile(r"^Download executions\/exe_[0-9a-z]+\/outputs\/output$")
        ).click()
    saved = tmp_path / "output"
    download.value.save_as(saved)
    assert saved.read_bytes() == data
    # The executions list shows it; the credential is in this tab's session storage only.
    page.get_by_role("link", name="Executions").click()
    expect(page.get_by_text("COMPLETE").first).to_be_visible()
    shot(page, "executions")
    assert key not in page.url
    assert page.context.cookies() == []
    assert page.evaluate("sessionStorage.getItem('provider.credential')") == key
    assert page.evaluate("localStorage.length") == 0
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('provider.credential')") is None


def test_an_operator_creates_a_tenant_and_a_key(page, service: str) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    sign_in(page, service, ADMIN_KEY)
    expect(page.get_by_role("heading", name="Tenants", level=1)).to_be_visible()
    page.get_by_label("Participant id").fill("did:web:partner.example")
    page.get_by_label("Display name").fill("Partner")
    page.get_by_role("button", name="Create tenant").click()
    expect(page.get_by_role("heading", name="Tenant Partner")).to_be_visible()
    expect(page.get_by_text("No API keys")).to_be_visible()
    page.get_by_label("Name").fill("partner laptop")
    page.get_by_role("button", name="Issue a key").click()
    issued = page.locator("code.secret")
    expect(issued).to_have_text(re.compile(r"^pk\.[A-Za-z0-9_\-]{43}$"))
    shot(page, "tenant")
    me = request(f"{service}/api/v1/me", key=issued.inner_text())
    assert me["tenant"]["participant_id"] == "did:web:partner.example" and me["role"] == "consumer"
    expect(page.get_by_role("cell", name="partner laptop", exact=True)).to_be_visible()
    page.get_by_role("link", name="Status").click()
    expect(page.get_by_role("cell", name="store", exact=True)).to_be_visible()
    expect(page.get_by_role("cell", name="webhook outbox", exact=True)).to_be_visible()
    shot(page, "status")
    # The catalog: a definition checked first (a mistake shows the field), then added.
    page.get_by_role("link", name="Assets").click()
    page.get_by_label("Asset id").fill("word-count")
    definition = page.get_by_label("Definition (JSON)")
    spec = json.loads(definition.input_value())
    definition.fill(json.dumps({**spec, "max_run_seconds": -5}))
    page.get_by_role("button", name="Validate").click()
    expect(page.get_by_role("alert")).to_contain_text("max_run_seconds")
    definition.fill(json.dumps({**spec, "title": "Word count"}))
    page.get_by_role("button", name="Validate").click()
    expect(page.get_by_text("Valid: word-count 1.0.0 can be added.")).to_be_visible()
    assert request(f"{service}/api/v1/assets?id=word-count")["items"] == []  # a check stores nothing
    page.get_by_role("button", name="Add").click()
    expect(page.get_by_role("cell", name="1.0.0").first).to_be_visible()
    expect(page.get_by_text("Word count")).to_be_visible()
    assert request(f"{service}/api/v1/assets/word-count")["title"] == "Word count"
    shot(page, "assets")
    page.get_by_role("link", name="Transfers").click()
    expect(page.get_by_text("No EDC provisionings")).to_be_visible()
    expect(page.get_by_text("No data flows")).to_be_visible()


def test_tokens_cancel_and_dead_letters_from_the_console(page, service: str) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    key = consumer_key(service, "did:web:dora.example", "Dora")
    workspace = request(f"{service}/api/v1/workspaces", "POST", {"name": "tokens"}, key=key)
    sign_in(page, service, key)
    expect(page.get_by_role("heading", name="Workspaces", level=1)).to_be_visible()
    # A token, shown once, that opens this workspace; revoked, it opens nothing.
    page.get_by_role("link", name="tokens").click()
    expect(page.get_by_text("No tokens.")).to_be_visible()
    page.get_by_role("button", name="Issue a token").click()
    token = page.locator("code.secret").inner_text()
    assert request(f"{service}/api/v1/me", key=token)["workspace_id"] == workspace["id"]
    page.get_by_role("button", name="Revoke").click()
    expect(page.get_by_role("button", name="Revoked")).to_be_visible()
    with pytest.raises(urllib.error.HTTPError) as refused:
        request(f"{service}/api/v1/me", key=token)
    assert refused.value.code == 401
    # A running execution, canceled from its page.
    request(
        f"{service}{'/api/v1/workspaces/' + workspace['id']}/objects/in.bin", "PUT", None, key=key, data=b"x"
    )
    body = {
        "asset_id": "dummy",
        "workspace_id": workspace["id"],
        "inputs": {"source": "in.bin"},
        "env": {"SLEEP_SECONDS": "600"},
    }
    execution = request(f"{service}/api/v1/executions", "POST", body, key=key)
    page.goto(f"{service}/console/#/executions/{execution['id']}")
    expect(page.locator(".status")).to_have_text("State: RUNNING")
    assert open_streams(service) >= 1  # the page follows the execution
    page.get_by_role("link", name="Workspaces").click()  # leaving the page ends its stream
    expect(page.get_by_role("heading", name="Workspaces", level=1)).to_be_visible()
    deadline = time.monotonic() + WAIT_SECONDS
    while open_streams(service) > 0:  # the service sees the stream close
        assert time.monotonic() < deadline, "the execution page's event stream stayed open"
        page.wait_for_timeout(100)
    page.go_back()
    expect(page.locator(".status")).to_have_text("State: RUNNING")
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator(".status")).to_have_text("State: CANCELED")
    expect(page.get_by_role("button", name="Cancel")).to_be_hidden()
    # A subscription whose receiver is down: its delivery dies, and Retry queues it again.
    page.get_by_role("link", name="Subscriptions").click()
    expect(page.get_by_text("No subscriptions.")).to_be_visible()
    page.get_by_label("Receiver URL").fill(f"http://127.0.0.1:{free_port()}/hook")
    page.get_by_label("Events").fill("execution.*")
    page.get_by_role("button", name="Subscribe").click()
    expect(page.locator("code.secret")).to_have_text(re.compile("^whsec_"))
    run = {**body, "env": {"SLEEP_SECONDS": "0"}}
    request(f"{service}/api/v1/executions", "POST", run, key=key)
    page.get_by_role("link", name=re.compile(r"^http:\/\/127\.0\.0\.1")).click()
    retry = page.get_by_role("button", name="Retry").first
    for _ in range(60):  # the deliveries page is read when opened: open it again until one died
        if retry.is_visible():
            break
        page.wait_for_timeout(500)
        page.reload()
    retry.click()
    expect(page.locator("#announcer")).to_have_text("Delivery queued again")
    shot(page, "deliveries")


def test_a_wrong_key_and_a_refused_request_show_the_problem(page, service: str) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    sign_in(page, service, "pk." + "x" * 43)
    alert = page.get_by_role("alert")
    expect(alert).to_be_visible()
    expect(alert).to_contain_text("Unauthorized")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('provider.credential')") is None
    shot(page, "sign-in-refused")
    # Signed in, a request the API refuses shows its title and detail where it was made.
    sign_in(page, service, consumer_key(service, "did:web:bob.example", "Bob"))
    expect(page.get_by_role("heading", name="Workspaces", level=1)).to_be_visible()
    page.get_by_label("Labels").fill("not a label")
    page.get_by_role("button", name="Create workspace").click()
    expect(page.get_by_role("alert")).to_contain_text('"not a label" is not KEY=VALUE')
    page.goto(service + "/console/#/executions/exe_00000000000000000000000000")
    expect(page.get_by_role("alert")).to_contain_text("Not Found")


def test_the_console_is_served_offline_with_a_strict_policy(service: str) -> None:
    import urllib.request

    with urllib.request.urlopen(service + "/console/") as response:
        page = response.read().decode()
        policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert not re.search(r"(src|href)=\"(https?:)?//", page)  # nothing from elsewhere
    for name in ("app.js", "api.js", "ui.js", "style.css"):
        with urllib.request.urlopen(f"{service}/console/static/{name}") as response:
            assert response.status == 200
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            text = response.read().decode()
        # No module, stylesheet, font or request from another origin (example URLs in
        # placeholders are text, not loads).
        assert not re.search(
            r"""(from\s*["']|import\(\s*["']|url\(\s*["']?|fetch\(\s*["'`])(https?:)?//""", text
        ), name


def test_a_phone_and_a_keyboard_are_enough(browser, service: str) -> None:  # type: ignore[no-untyped-def]
    """Signed in with the keyboard alone on a phone-sized screen: each page fits its width, and
    a new page moves the focus to its heading (where a screen reader starts reading)."""
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    try:
        key = consumer_key(service, "did:web:carol.example", "Carol")
        workspace = request(f"{service}/api/v1/workspaces", "POST", {"name": "phone"}, key=key)
        page.goto(service + "/console/")
        for _ in range(10):  # Tab until the credential field has the focus
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement.name") == "credential":
                break
        page.keyboard.type(key)
        page.keyboard.press("Enter")
        heading = page.get_by_role("heading", name="Workspaces", level=1)
        expect(heading).to_be_focused()
        for route in (
            "#/workspaces",
            f"#/workspaces/{workspace['id']}",
            "#/run",
            "#/executions",
            "#/subscriptions",
        ):
            page.goto(f"{service}/console/{route}")
            expect(page.locator("h1")).to_be_focused()
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), route
        shot(page, "phone")
    finally:
        context.close()


def test_the_api_docs_render_under_their_own_policy(page, service: str) -> None:  # type: ignore[no-untyped-def]
    """/docs shares the console's origin: it gets a policy too, and Swagger UI still works."""
    from playwright.sync_api import expect

    refused: list[str] = []
    page.on(
        "console",
        lambda message: refused.append(message.text) if "Content Security Policy" in message.text else None,
    )
    response = page.goto(service + "/docs")
    assert "sha256-" in response.headers["content-security-policy"]
    expect(page.locator(".opblock").first).to_be_visible()
    expect(page.get_by_text("/api/v1/executions/{execution_id}/logs").first).to_be_visible()
    assert refused == []
