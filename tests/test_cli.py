"""The `provider` command line."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from provider.app import create_app
from provider.backends.sql import migrate as migrations
from provider.cli import main
from provider.config import Settings
from tests.conftest import ADMIN_KEY, REPO, WAIT_SECONDS


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("PROVIDER_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    commands = [
        ["serve"],
        ["migrate"],
        ["init"],
        ["version"],
        ["assets"],
        ["assets", "list"],
        ["assets", "validate"],
        ["watch"],
        ["run"],
        ["executions"],
        *[["executions", c] for c in ("list", "get", "cancel", "logs", "outputs")],
        ["tenants"],
        *[["tenants", c] for c in ("list", "create", "get")],
        ["keys"],
        *[["keys", c] for c in ("list", "create", "revoke")],
        ["tokens"],
        *[["tokens", c] for c in ("list", "create", "revoke")],
        ["subscriptions"],
        *[["subscriptions", c] for c in ("list", "create", "rm", "deliveries", "retry")],
        ["completion"],
        ["put"],
        ["get"],
    ]
    for argv in [[], *commands]:
        with pytest.raises(SystemExit) as done:
            main([*argv, "--help"])
        assert done.value.code == 0
        assert "usage: provider" in capsys.readouterr().out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version"]) == 0
    assert re.fullmatch(r"provider \d+\.\d+\.\d+\n", capsys.readouterr().out)


def test_migrate_then_init_prints_a_working_key_once(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["migrate"]) == 0
    assert f"revision {migrations.head_revision()}" in capsys.readouterr().out
    assert main(["init"]) == 0
    first = capsys.readouterr().out
    keys = re.findall(r"pk\.[A-Za-z0-9_\-]{43}", first)
    assert len(keys) == 1
    assert main(["init"]) == 0
    second = capsys.readouterr().out
    assert "exists already" in second and "pk." not in second
    assert (tmp_path / "data" / "provider.db").is_file()

    async def me() -> int:
        server = TestServer(create_app(Settings(data_dir=tmp_path / "data")))
        await server.start_server()
        try:
            return await asyncio.to_thread(
                main, ["assets", "list", "--url", str(server.make_url("")), "--key", keys[0]]
            )
        finally:
            await server.close()

    assert asyncio.run(me()) == 0
    assert "no assets" in capsys.readouterr().out  # the default asset directory is not in this cwd


def test_assets_validate_names_file_field_and_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = REPO / "config" / "assets" / "dummy.yaml"
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: Bad\nversion: '1'\ntitle: x\nimage: img\nmax_run_seconds: -1\n")
    assert main(["assets", "validate", str(good)]) == 0
    assert "ok (dummy 1.0.0)" in capsys.readouterr().out
    assert main(["assets", "validate", str(good), str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}: id: String should match pattern" in err
    assert f"{bad}: max_run_seconds: Input should be greater than or equal to 1" in err


async def test_assets_list_against_a_running_service(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    server = TestServer(create_app(settings))
    await server.start_server()
    try:
        url = str(server.make_url(""))
        assert await asyncio.to_thread(main, ["assets", "list", "--url", url, "--key", ADMIN_KEY]) == 0
        assert re.search(r"^dummy\s+1\.0\.0\s+\S+\s+Dummy job$", capsys.readouterr().out, re.M)
        assert await asyncio.to_thread(main, ["assets", "list", "--url", url, "--key", "pk.wrong"]) == 1
        assert "401" in capsys.readouterr().err
    finally:
        await server.close()


def test_client_commands_explain_an_unreachable_service(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["assets", "list", "--url", "http://127.0.0.1:9", "--key", "k"]) == 1
    assert "cannot reach the service" in capsys.readouterr().err


def test_invalid_asset_file_stops_serve(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "config" / "assets").mkdir(parents=True)
    (tmp_path / "config" / "assets" / "broken.yaml").write_text("id: x\nversion: '1'\ntitle: t\n")
    assert main(["serve"]) == 2
    assert "broken.yaml: image: Field required" in capsys.readouterr().err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_starts_on_embedded_defaults(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVIDER_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "provider", "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=1) as response:
                    assert response.status == 200
                    break
            except OSError:
                assert process.poll() is None, process.stdout.read() if process.stdout else ""
                assert time.monotonic() < deadline, "service did not start"
                time.sleep(0.2)
        with urllib.request.urlopen(base + "/docs", timeout=5) as response:
            assert b"swagger-ui-bundle.js" in response.read()
        with urllib.request.urlopen(base + "/metrics", timeout=5) as response:
            assert (
                b'provider_http_requests_total{method="GET",route="/healthz",status="200"}' in response.read()
            )
        assert (tmp_path / "data" / "provider.db").is_file()
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=20)
    assert f"API docs: {base}/docs" in output
    assert process.returncode == 0, output


async def test_workspace_put_get_ls_import_and_rm(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    allowed = settings.model_copy(
        update={"imports": settings.imports.model_copy(update={"allowed_networks": ["127.0.0.1/32"]})}
    )
    server = TestServer(create_app(allowed))
    await server.start_server()
    source_app = web.Application()
    payload = os.urandom(2_500_000)

    async def data(request: web.Request) -> web.Response:
        return web.Response(body=payload)

    source_app.router.add_get("/data", data)
    source = TestServer(source_app)
    await source.start_server()

    async def cli(*argv: str) -> int:
        return int(
            await asyncio.to_thread(main, [*argv, "--url", str(server.make_url("")), "--key", ADMIN_KEY])
        )

    try:
        assert await cli("workspace", "create", "--name", "cli", "--label", "team=a") == 0
        workspace = capsys.readouterr().out.strip()
        assert workspace.startswith("ws_")
        local = tmp_path / "input.bin"
        local.write_bytes(payload)
        assert await cli("put", workspace, str(local), "in/input.bin") == 0
        out = capsys.readouterr()
        assert f"in/input.bin: {len(payload)} bytes" in out.out and "upload" in out.err
        assert await cli("ls", workspace, "in/") == 0
        assert re.search(rf"^\s+{len(payload)}\s+\S+\s+in/input\.bin$", capsys.readouterr().out, re.M)
        target = tmp_path / "copy.bin"
        assert await cli("get", workspace, "in/input.bin", str(target)) == 0
        assert target.read_bytes() == payload
        capsys.readouterr()
        assert await cli("import", workspace, str(source.make_url("/data")), "imported.bin") == 0
        assert f"{len(payload)} bytes imported" in capsys.readouterr().out
        assert await cli("import", workspace, "http://10.9.9.9/x", "nope") == 1
        assert "private address" in capsys.readouterr().err
        assert await cli("get", workspace, "missing", str(tmp_path / "m")) == 1
        assert "404" in capsys.readouterr().err and not (tmp_path / "m").exists()
        assert await cli("workspace", "list") == 0
        assert workspace in capsys.readouterr().out
        assert await cli("workspace", "rm", workspace) == 0
        assert await cli("ls", workspace) == 1
        assert "404" in capsys.readouterr().err
    finally:
        await source.close()
        await server.close()


def test_demo_runs_the_main_job_from_any_directory_on_data_of_its_own(tmp_path: Path) -> None:
    # Outside the source tree, with no asset files and no data here: the demo brings its own.
    assert not tmp_path.is_relative_to(REPO)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVIDER_")}
    result = subprocess.run(
        [sys.executable, "-m", "provider", "demo", "--sleep", "0"],
        cwd=tmp_path,
        env={**env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "identical to the input" in result.stdout
    for state in ("QUEUED", "INITIALIZING", "RUNNING", "FINALIZING", "COMPLETE"):
        assert f"state {state}" in result.stdout
    assert (tmp_path / "demo" / "output.bin").read_bytes() == (tmp_path / "demo" / "input.bin").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]  # no ./data: a service's data is safe


def test_demo_with_a_data_dir_in_use_refuses_and_names_the_holder(tmp_path: Path) -> None:
    from provider.backends.data_lock import DataLock

    holder = DataLock(tmp_path / "data" / "provider.db.lock", "the database")
    holder.acquire()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROVIDER_")}
        result = subprocess.run(
            [sys.executable, "-m", "provider", "demo", "--sleep", "0", "--data-dir", "data"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        holder.release()
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"is in use by process {os.getpid()}" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "demo" / "output.bin").exists()


def test_the_wheel_ships_the_example_assets_where_the_demo_finds_them() -> None:
    import tomllib

    from provider.backends.asset_files import example_asset_directory

    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    shipped = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    assert shipped["config/assets"] == "provider/assets"
    # In this source tree the one copy is config/assets; in a wheel, provider/assets.
    assert example_asset_directory() == REPO / "config" / "assets"
    assert (example_asset_directory() / "dummy.yaml").is_file()


@pytest.mark.parametrize("argv", [["--help"], ["version"], ["--version"], ["workspace", "--help"]])
def test_help_and_version_import_nothing_heavy(argv: list[str]) -> None:
    """They start at once: no web framework, no validation library, no database driver is loaded."""
    code = (
        "import sys\n"
        "from provider.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        "heavy = ('aiohttp', 'pydantic', 'sqlalchemy', 'yaml', 'rich', 'botocore', 'kubernetes_asyncio')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules if m.startswith(heavy)}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout


@pytest.mark.parametrize(
    "key", ["../outside", "a/../../outside", "a//b", "./a", "C:\\evil.bat", "a\\..\\..\\x", "c:x", ""]
)
def test_downloads_refuse_keys_that_would_leave_the_target(tmp_path: Path, key: str) -> None:
    """Object keys are the server's word, and any writer of the workspace chose them."""
    from provider.cli.common import CliError, local_target

    with pytest.raises(CliError, match="refusing to write"):
        local_target(tmp_path / "target", key)
    assert local_target(tmp_path / "target", "a/b.txt") == tmp_path / "target" / "a" / "b.txt"


def test_server_text_is_printed_as_it_is_not_as_markup(capsys: pytest.CaptureFixture[str]) -> None:
    from provider.cli.common import _console

    _console().print("worker said [/usr/lib] and [link=https://evil.example]click[/link]")
    assert "[/usr/lib]" in capsys.readouterr().err


def test_a_parallelism_below_one_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["put", "ws", "folder", "--parallel", "0"])
    assert done.value.code == 2 and "is not at least 1" in capsys.readouterr().err


def test_a_credential_for_plain_http_elsewhere_is_warned_about(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["workspace", "list", "--url", "http://provider.invalid:9", "--key", "pk.x"]) == 1
    error = capsys.readouterr().err
    assert "over plain http; use https" in error and "Traceback" not in error
    assert main(["workspace", "list", "--url", "http://127.0.0.1:9", "--key", "pk.x"]) == 1
    assert "plain http" not in capsys.readouterr().err  # loopback stays on the machine
