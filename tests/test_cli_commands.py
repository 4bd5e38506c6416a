"""Every client command of the `provider` CLI, each run as a subprocess against a live service
(`provider serve`, also a subprocess), as a person at a terminal would."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from tests.conftest import ADMIN_KEY, REPO, WAIT_SECONDS
from tests.live_service import serve


def script_asset(name: str, code: str) -> dict[str, Any]:
    return {
        "id": name,
        "version": "1.0.0",
        "title": name,
        "image": "python:3.12-slim",
        "outputs": [{"name": "result", "path": "result.txt"}],
        "max_run_seconds": 120,
        "local": {"command": ["{python}", "-c", code]},
    }


@dataclass
class Live:
    url: str
    root: Path

    def cli(
        self, *argv: str, key: str | None = ADMIN_KEY, stdin: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "provider", *argv],
            cwd=self.root,
            env=self.env(key),
            input=stdin,
            capture_output=True,
            timeout=WAIT_SECONDS * 4,
            check=False,
        )

    def env(self, key: str | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROVIDER_")}
        env["PROVIDER_API_URL"] = self.url
        if key is not None:
            env["PROVIDER_API_KEY"] = key
        env["COLUMNS"] = "200"
        return env

    def start(self, *argv: str, key: str | None = ADMIN_KEY) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "provider", *argv],
            cwd=self.root,
            env=self.env(key),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def ok(self, *argv: str, key: str | None = ADMIN_KEY, stdin: bytes | None = None) -> str:
        done = self.cli(*argv, key=key, stdin=stdin)
        assert done.returncode == 0, (argv, done.stdout, done.stderr)
        return done.stdout.decode()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    root = tmp_path_factory.mktemp("cli")
    assets = root / "assets"
    assets.mkdir()
    shutil.copy(REPO / "config" / "assets" / "dummy.yaml", assets)
    (assets / "fail.yaml").write_text(
        yaml.safe_dump(script_asset("fail", "import sys; print('about to fail'); sys.exit(7)"))
    )
    (assets / "sleepy.yaml").write_text(
        yaml.safe_dump(script_asset("sleepy", "import time; print('sleeping', flush=True); time.sleep(600)"))
    )
    settings = {
        "assets": {"directory": str(assets)},
        "compute": {"local": {"cancel_grace_seconds": 2}},
        "notifications": {
            "allowed_networks": ["127.0.0.1/32"],
            "allow_http": True,
            "max_attempts": 1,
            "poll_seconds": 0.2,
        },
    }
    with serve(root, **settings) as url:
        yield Live(url, root)


@pytest.fixture(scope="module")
def consumer(live: Live) -> str:
    """A consumer's API key, made with the CLI's own admin commands."""
    tenant = json.loads(
        live.ok("tenants", "create", "did:web:cli-consumer", "--name", "CLI consumer", "--json")
    )
    return live.ok("keys", "create", tenant["id"], "--name", "laptop").strip()


def test_tenants_and_keys_as_an_operator(live: Live) -> None:
    tenant = json.loads(live.ok("tenants", "create", "did:web:keys", "--allow", "dummy", "--json"))
    assert tenant["participant_id"] == "did:web:keys" and tenant["allowed_assets"] == ["dummy"]
    assert "did:web:keys" in live.ok("tenants", "list")
    assert "assets: dummy" in live.ok("tenants", "get", tenant["id"])
    key = live.ok("keys", "create", tenant["id"], "--name", "ci").strip()
    assert re.fullmatch(r"pk\.[A-Za-z0-9_\-]{43}", key)
    assert "dummy" in live.ok("assets", "list", key=key)
    [listed] = json.loads(live.ok("keys", "list", tenant["id"], "--json"))
    assert listed["name"] == "ci" and "key" not in listed  # never the key itself
    assert f"revoked {listed['id']}" in live.ok("keys", "revoke", tenant["id"], listed["id"])
    refused = live.cli("workspace", "list", key=key)
    assert refused.returncode == 1 and b"401" in refused.stderr and b"Traceback" not in refused.stderr
    assert "revoked" in live.ok("keys", "list", tenant["id"])


def test_run_uploads_the_input_follows_the_execution_and_downloads_the_output(
    live: Live, consumer: str
) -> None:
    data = os.urandom(200_000)
    (live.root / "input.bin").write_bytes(data)
    done = live.cli(
        "run",
        "dummy",
        "--input",
        "source=input.bin",
        "--param",
        "SLEEP_SECONDS=0",
        "--download",
        "out",
        key=consumer,
    )
    assert done.returncode == 0, done.stderr
    execution_id = done.stdout.decode().strip()
    assert re.fullmatch(r"exe_[0-9a-z]{26}", execution_id)
    followed = done.stderr.decode()
    assert "QUEUED" in followed and "COMPLETE" in followed and "downloaded" in followed
    assert (live.root / "out" / "output").read_bytes() == data
    execution = json.loads(live.ok("executions", "get", execution_id, "--json", key=consumer))
    assert execution["state"] == "COMPLETE" and execution["inputs"] == {"source": "inputs/source/input.bin"}
    assert "COMPLETE" in live.ok("executions", "get", execution_id, key=consumer)
    listed = json.loads(live.ok("executions", "list", "--asset", "dummy", "--json", key=consumer))
    assert execution_id in [item["id"] for item in listed]
    outputs = json.loads(live.ok("executions", "outputs", execution_id, "--json", key=consumer))
    assert [o["sha256"] for o in outputs["outputs"]] == [hashlib.sha256(data).hexdigest()]
    live.ok("executions", "outputs", execution_id, "--download", "again", key=consumer)
    assert (live.root / "again" / "output").read_bytes() == data
    # Again on the same workspace, its input given as the key that is now there; no --wait.
    started = live.ok(
        "run",
        "dummy",
        "--workspace",
        execution["workspace_id"],
        "--input",
        "source=inputs/source/input.bin",
        "--param",
        "SLEEP_SECONDS=0",
        key=consumer,
    ).strip()
    assert re.fullmatch(r"exe_[0-9a-z]{26}", started) and started != execution_id


def test_run_exit_status_tells_how_the_execution_ended(live: Live, consumer: str) -> None:
    failed = live.cli("run", "fail", "--wait", key=consumer)
    assert failed.returncode == 3, failed.stderr
    assert b"EXECUTOR_ERROR" in failed.stderr and b"Traceback" not in failed.stderr
    execution_id = failed.stdout.decode().strip()
    assert "about to fail" in live.ok("executions", "logs", execution_id, key=consumer)
    assert live.ok("executions", "logs", execution_id, "--tail", "1", key=consumer).strip() == "about to fail"


def test_a_run_canceled_from_another_terminal_exits_5_and_its_followed_log_ends(
    live: Live, consumer: str
) -> None:
    workspace = live.ok("workspace", "create", "--name", "cancel", key=consumer).strip()
    follower = live.start("run", "sleepy", "--workspace", workspace, "--wait", key=consumer)
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        running: list[dict[str, Any]] = []
        while not running:  # each look is a whole CLI run: no sleep needed between them
            assert time.monotonic() < deadline, "the execution did not start"
            running = json.loads(
                live.ok(
                    "executions",
                    "list",
                    "--workspace",
                    workspace,
                    "--state",
                    "RUNNING",
                    "--json",
                    key=consumer,
                )
            )
        execution_id = running[0]["id"]
        log = live.start("executions", "logs", execution_id, "-f", key=consumer)
        canceled = live.ok("executions", "cancel", execution_id, key=consumer)
        assert canceled.split() in ([execution_id, "CANCELING"], [execution_id, "CANCELED"])
        log_out, _ = log.communicate(timeout=WAIT_SECONDS)
        assert log.returncode == 0 and b"sleeping" in log_out
        out, err = follower.communicate(timeout=WAIT_SECONDS)
        assert follower.returncode == 5, err
        assert out.decode().strip() == execution_id and b"CANCELED" in err
    finally:
        follower.kill()


def test_user_mistakes_are_one_line_errors(live: Live, consumer: str) -> None:
    cases = [
        (["workspace", "list", "--url", "127.0.0.1:9"], "needs http:// or https://"),
        (
            ["workspace", "create", "--label", "no-equals-sign"],
            "--label 'no-equals-sign': expected KEY=VALUE",
        ),
        (["executions", "get", "exe_00000000000000000000000000"], "404"),
        (["run", "dummy", "--input", "nosuch=x"], "has no input nosuch"),
        (["run", "nosuchasset"], "404"),
        (["workspace", "list", "--url", "http://127.0.0.1:9"], "cannot reach the service"),
    ]
    for argv, message in cases:
        done = live.cli(*argv, key=consumer)
        error = done.stderr.decode()
        assert done.returncode == 1, (argv, error)
        assert message in error and "Traceback" not in error, (argv, error)
        assert len(error.strip().splitlines()) == 1, (argv, error)
    debug = live.cli("--debug", "workspace", "list", "--url", "127.0.0.1:9", key=consumer)
    assert debug.returncode != 0 and b"Traceback" in debug.stderr
    missing = live.cli("workspace", "list", key=None)
    assert missing.returncode == 1 and b"PROVIDER_API_KEY" in missing.stderr


def test_folders_go_up_and_down_in_parallel_and_resume(live: Live, consumer: str) -> None:
    workspace = live.ok("workspace", "create", "--name", "folders", key=consumer).strip()
    tree = live.root / "tree"
    files = {"a.txt": b"A" * 10, "sub/b.bin": os.urandom(300_000), "sub/deeper/c": b""}
    for name, content in files.items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_bytes(content)
    live.ok("put", workspace, "tree", "data", "--parallel", "2", key=consumer)
    listed = json.loads(live.ok("ls", workspace, "data/", "--json", key=consumer))
    assert sorted(item["key"] for item in listed) == sorted(f"data/{name}" for name in files)
    again = live.cli("put", workspace, "tree", "data", "--resume", key=consumer)
    assert again.returncode == 0 and b"3 files already in the workspace" in again.stderr
    (tree / "a.txt").write_bytes(b"B" * 10)  # same size, newer: sent again
    live.ok("put", workspace, "tree", "data", "--resume", key=consumer)
    assert live.cli("get", workspace, "data/a.txt", "-", key=consumer).stdout == b"B" * 10
    files["a.txt"] = b"B" * 10
    (tree / "link").symlink_to(live.root / "config.yaml")  # a planted link is not followed
    live.ok("put", workspace, "tree", "data", key=consumer)
    assert "data/link" not in [
        item["key"] for item in json.loads(live.ok("ls", workspace, "data/", "--json", key=consumer))
    ]
    live.ok("get", workspace, "data/", "copy", key=consumer)
    for name, content in files.items():
        assert (live.root / "copy" / name).read_bytes() == content
    # Standard input and output.
    stored = live.ok("put", workspace, "-", "piped.bin", key=consumer, stdin=b"from a pipe" * 1000)
    assert "11000 bytes" in stored
    assert live.cli("get", workspace, "piped.bin", "-", key=consumer).stdout == b"from a pipe" * 1000


def test_tokens_open_one_workspace(live: Live, consumer: str) -> None:
    mine = live.ok("workspace", "create", "--name", "tokens", key=consumer).strip()
    other = live.ok("workspace", "create", "--name", "other", key=consumer).strip()
    token = live.ok(
        "tokens", "create", mine, "--scope", "objects:read", "--scope", "objects:write", key=consumer
    ).strip()
    live.ok("put", mine, "-", "x.txt", key=token, stdin=b"x")
    refused = live.cli("put", other, "-", "x.txt", key=token, stdin=b"x")
    assert refused.returncode == 1 and b"404" in refused.stderr
    [listed] = json.loads(live.ok("tokens", "list", mine, "--json", key=consumer))
    assert sorted(listed["scopes"]) == ["objects:read", "objects:write"]
    live.ok("tokens", "revoke", mine, listed["id"], key=consumer)
    assert live.cli("ls", mine, key=token).returncode == 1


class Receiver(http.server.BaseHTTPRequestHandler):
    """A webhook receiver that refuses everything until it is told to accept."""

    accept = False
    received: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(204 if Receiver.accept else 500)
        self.end_headers()
        if Receiver.accept:
            Receiver.received.append(body)

    def log_message(self, *args: Any) -> None:
        return None


def test_subscriptions_deliveries_and_a_dead_letter_retried(live: Live, consumer: str) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        workspace = live.ok("workspace", "create", "--name", "hooks", key=consumer).strip()
        created = live.ok(
            "subscriptions",
            "create",
            url,
            "--event",
            "execution.completed",
            "--workspace",
            workspace,
            key=consumer,
        )
        subscription_id, secret_line = created.strip().splitlines()
        assert subscription_id.startswith("sub_") and secret_line.startswith("secret whsec_")
        assert url in live.ok("subscriptions", "list", key=consumer)
        assert (
            live.ok("subscriptions", "deliveries", subscription_id, key=consumer).strip() == "no deliveries"
        )
        (live.root / "hook.bin").write_bytes(b"hook")
        live.ok(
            "run",
            "dummy",
            "--workspace",
            workspace,
            "--input",
            "source=hook.bin",
            "--param",
            "SLEEP_SECONDS=0",
            "--wait",
            key=consumer,
        )
        deadline = time.monotonic() + WAIT_SECONDS
        dead: list[dict[str, Any]] = []
        while not dead:  # one attempt (notifications.max_attempts: 1), refused: a dead letter
            assert time.monotonic() < deadline, "no dead letter"
            dead = json.loads(
                live.ok(
                    "subscriptions", "deliveries", subscription_id, "--state", "dead", "--json", key=consumer
                )
            )
        assert dead[0]["event_type"] == "execution.completed" and "500" in (dead[0]["last_error"] or "500")
        Receiver.accept = True
        retried = json.loads(
            live.ok("subscriptions", "retry", subscription_id, dead[0]["id"], "--json", key=consumer)
        )
        assert retried["state"] in ("pending", "succeeded")
        while not Receiver.received:
            assert time.monotonic() < deadline + WAIT_SECONDS, "the retried delivery did not arrive"
            live.ok("subscriptions", "deliveries", subscription_id, key=consumer)
        assert json.loads(Receiver.received[0])["type"] == "execution.completed"
        refused = live.cli("subscriptions", "retry", subscription_id, "dlv_nosuch", key=consumer)
        assert refused.returncode == 1 and b"404" in refused.stderr
        assert f"deleted {subscription_id}" in live.ok("subscriptions", "rm", subscription_id, key=consumer)
        assert subscription_id not in live.ok("subscriptions", "list", key=consumer)
    finally:
        server.shutdown()


def test_completion_scripts_name_every_command(live: Live) -> None:
    for shell in ("bash", "zsh"):
        script = live.ok("completion", shell, key=None)
        for command in ("run", "executions", "tenants", "keys", "tokens", "subscriptions", "put", "get"):
            assert command in script, (shell, command)
    bash = shutil.which("bash")
    if bash:
        check = subprocess.run(
            [bash, "-n"], input=live.ok("completion", "bash", key=None).encode(), check=False
        )
        assert check.returncode == 0


def test_version(live: Live) -> None:
    assert re.fullmatch(r"provider \d+\.\d+\.\d+\n", live.ok("--version", key=None))
