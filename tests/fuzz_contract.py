"""The whole contract fuzzed by schemathesis against a live service, once as admin, once as consumer.

`make fuzz` runs `python -m tests.fuzz_contract` (at least 5,000 cases in all); tests/test_fuzz.py
runs a small one in the suite. Each role's run starts `provider serve` on a free loopback port
with a temporary data directory, makes a tenant with a consumer key, a workspace holding an
object, a finished execution, a subscription with a dead delivery, a workspace token and an
import up front, and points schemathesis at it with every check, all phases (the stateful one
follows the contract's links) and a fixed seed. The ids made up front are offered to the
generator as dictionaries, so that many cases reach real resources rather than 404. What is not
counted as a failure, and why, is in tests/fuzz_hooks.py.

The run happens in a network namespace of its own with loopback only (`unshare`), so that URLs the
generator makes up (imports, webhooks, EDC callbacks) cannot reach anything but this machine's
loopback: the service would otherwise try public addresses that the address guard allows.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CONTRACT = REPO / "contracts" / "openapi.yaml"
HOOKS = REPO / "tests" / "fuzz_hooks.py"
ADMIN_KEY = "fuzz-admin-key-" + "f0e1d2c3b4a5" * 3
EDC_CONNECTOR = "fuzz"
EDC_SECRET = "fuzz-connector-secret-" + "a1b2c3d4" * 4
EDC_EVENTS_HEADER = "X-Api-Key"
EDC_EVENTS_CODE = "fuzz-events-code-" + "9z8y7x6w" * 4
SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")
ROLES = ("admin", "consumer")
PHASES = ("examples", "coverage", "fuzzing", "stateful")
WAIT_SECONDS = 60.0
NETNS_ENV = "PROVIDER_FUZZ_NETNS"  # set inside the network namespace made for the run


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Service:
    """`provider serve` in a subprocess, on its own data directory."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = {
            "data_dir": str(directory / "data"),
            "server": {"port": self.port},
            "auth": {"bootstrap_admin_key": ADMIN_KEY, "key_cache_seconds": 0},
            "assets": {"directory": str(REPO / "config" / "assets")},
            # Imports and webhooks may reach the service itself; nothing else exists in the namespace.
            "imports": {"allowed_networks": ["127.0.0.0/8"], "max_attempts": 1, "connect_timeout_seconds": 2},
            "notifications": {
                "allow_http": True,
                "allowed_networks": ["127.0.0.0/8"],
                "max_attempts": 1,
                "timeout_seconds": 2,
                "lease_seconds": 10,
                "poll_seconds": 0.2,
                "stream_heartbeat_seconds": 0.2,
            },
            # Long-polls end soon, so that a generated `wait` does not hold the run.
            "executions": {"max_wait_seconds": 0.2, "retry": {"max_attempts": 1}},
            "edc": {
                "connectors": {EDC_CONNECTOR: {"secret": EDC_SECRET}},
                "events": {"auth_key": EDC_EVENTS_HEADER, "auth_code": EDC_EVENTS_CODE},
                "callback_deadline_seconds": 10,
            },
            "logging": {"level": "WARNING", "format": "text"},
        }
        (directory / "config.yaml").write_text(json.dumps(self.config))
        self.log_path = directory / "service.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROVIDER_")}
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "provider", "serve", "--config", str(directory / "config.yaml")],
                env=env,
                cwd=directory,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=2):
                    return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("the service did not start:\n" + self.log_path.read_text()) from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def call(self, method: str, path: str, key: str, body: Any = None, data: bytes | None = None) -> Any:
        headers = {"Authorization": f"Bearer {key}"}
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read()
        return json.loads(text) if text else None

    def wait_for(self, what: str, method: str, path: str, key: str, done: Any) -> Any:
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            answer = self.call(method, path, key)
            if done(answer):
                return answer
            if time.monotonic() > deadline:
                raise RuntimeError(f"waited {WAIT_SECONDS:g} s for {what}: {answer}")
            time.sleep(0.1)


@dataclass
class Fixtures:
    """What exists before the run; its ids seed the generator's dictionaries."""

    consumer_key: str = ""
    values: dict[str, list[str]] = field(default_factory=dict)


def provision(service: Service) -> Fixtures:
    """A tenant with a consumer key and what the consumer made with it: a workspace with an
    object, a finished execution, a token, an import and a subscription with a dead delivery."""
    tenant = service.call("POST", "/api/v1/tenants", ADMIN_KEY, {"participant_id": "did:web:fuzz.example"})
    issued = service.call("POST", f"/api/v1/tenants/{tenant['id']}/api-keys", ADMIN_KEY, {"name": "fuzz"})
    key = issued["key"]
    workspace = service.call("POST", "/api/v1/workspaces", key, {"name": "fuzz"})
    ws = workspace["id"]
    service.call("PUT", f"/api/v1/workspaces/{ws}/objects/inputs/data.txt", key, data=b"fuzz input\n")
    token = service.call("POST", f"/api/v1/workspaces/{ws}/tokens", key, {"name": "fuzz"})
    # Its events are delivered to a URL that refuses them (a GET-only path), so the delivery dies.
    subscription = service.call(
        "POST",
        "/api/v1/subscriptions",
        key,
        {"url": f"{service.url}/healthz", "events": ["execution.*"]},
    )
    execution = service.call(
        "POST",
        "/api/v1/executions",
        key,
        {
            "asset_id": "dummy",
            "workspace_id": ws,
            "inputs": {"source": "inputs/data.txt"},
            "env": {"SLEEP_SECONDS": "0"},
        },
    )
    service.wait_for(
        "the execution to finish",
        "GET",
        f"/api/v1/executions/{execution['id']}",
        key,
        lambda e: e["state"] == "COMPLETE",
    )
    imported = service.call(
        "POST",
        f"/api/v1/workspaces/{ws}/imports",
        key,
        {"source_url": f"{service.url}/openapi.json", "target_key": "imports/openapi.json"},
    )
    service.wait_for(
        "the import to finish",
        "GET",
        f"/api/v1/workspaces/{ws}/imports/{imported['id']}",
        key,
        lambda i: i["state"] in ("succeeded", "failed"),
    )
    deliveries = service.wait_for(
        "a dead delivery",
        "GET",
        f"/api/v1/subscriptions/{subscription['id']}/deliveries",
        key,
        lambda page: any(d["state"] == "dead" for d in page["items"]),
    )
    dead = next(d["id"] for d in deliveries["items"] if d["state"] == "dead")
    admin_key = service.call("GET", f"/api/v1/tenants/{tenant['id']}/api-keys", ADMIN_KEY)["items"][0]
    return Fixtures(
        consumer_key=key,
        values={
            "tenant_id": [tenant["id"]],
            "key_id": [admin_key["id"]],
            "workspace_id": [ws],
            "token_id": [token["id"]],
            "key": ["inputs/data.txt", "imports/openapi.json"],
            "import_id": [imported["id"]],
            "execution_id": [execution["id"]],
            "subscription_id": [subscription["id"]],
            "delivery_id": [dead],
            "asset_id": ["dummy"],
            "version": ["1.0.0"],
            "connector": [EDC_CONNECTOR],
            "secret": [EDC_SECRET],
        },
    )


def toml_value(value: Any) -> str:
    """TOML for the few value types the configuration holds (JSON's strings and lists are TOML's)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


@dataclass(frozen=True)
class Run:
    """How much to generate: schemathesis phases, cases per operation in its fuzzing and stateful
    phases (the coverage phase derives its own from the contract), and the seed."""

    phases: str
    max_examples: int
    seed: int


def schemathesis_config(service: Service, fixtures: Fixtures, role: str, run: Run, report: Path) -> str:
    key = ADMIN_KEY if role == "admin" else fixtures.consumer_key
    lines = [
        f"base-url = {toml_value(service.url)}",
        f"seed = {run.seed}",
        "workers = 1",
        "request-timeout = 10",
        "max-stream-events = 1",
        "color = false",
        f"hooks = {toml_value(str(HOOKS))}",
        "",
        "[headers]",
        f"Authorization = {toml_value('Bearer ' + key)}",
        f"{EDC_EVENTS_HEADER} = {toml_value(EDC_EVENTS_CODE)}",
        "",
        "[generation]",
        'mode = "all"',
        f"max-examples = {run.max_examples}",
        # Repeatable: no examples carried over from earlier runs.
        'database = "none"',
        "",
        "[cache]",
        "enabled = false",
        "",
        "[checks]",
        "enabled = true",
        "",
        "[phases]",
        *(f"{phase}.enabled = {toml_value(phase in run.phases.split(','))}" for phase in PHASES),
        # The contract's links only: the run checks that they lead where they say.
        "stateful.inference.algorithms = []",
        "",
        "[[operations]]",
        'include-operation-id = ["createWorkspaceCredentials", "createObjectLink"]',
        # The filesystem storage backend answers 501 here, as the contract says.
        'checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "501"]',
        "",
        "[[operations]]",
        'include-operation-id = "streamEvents"',
        # A stream is read until its first event or this timeout; a quiet one is cut short.
        "request-timeout = 0.5",
        "",
        "[reports.json]",
        f"path = {toml_value(str(report))}",
        "",
    ]
    for name, values in fixtures.values.items():
        lines += [f"[dictionaries.{name}]", f"values = {toml_value(values)}", ""]
    # Half the values of each path parameter name what exists; the other half are made up.
    lines.append("[parameters]")
    for name in fixtures.values:
        lines.append(f"{toml_value('path.' + name)} = {{dictionary = {toml_value(name)}, probability = 0.5}}")
    lines.append("")
    return "\n".join(lines)


@dataclass
class RunResult:
    role: str
    cases: int
    failures: list[dict[str, Any]]
    errors: list[dict[str, Any]]
    exit_code: int
    seconds: float
    output: str
    dropped: Counter[str]  # failures tests/fuzz_hooks.py did not count, by rule

    @property
    def failed(self) -> bool:
        return bool(self.failures or self.errors or self.exit_code)


def run_role(role: str, run: Run, directory: Path) -> RunResult:
    directory.mkdir(parents=True)
    started = time.monotonic()
    service = Service(directory)
    try:
        fixtures = provision(service)
        report = directory / "report.json"
        config = directory / "schemathesis.toml"
        config.write_text(schemathesis_config(service, fixtures, role, run, report))
        completed = subprocess.run(
            [SCHEMATHESIS, "--config-file", str(config), "run", str(CONTRACT), "--checks", "all"],
            cwd=directory,
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        service.stop()
    output = completed.stdout + completed.stderr
    (directory / "schemathesis.log").write_text(output)
    if not report.exists():
        raise RuntimeError(f"schemathesis wrote no report ({completed.returncode}):\n{output}")
    document = json.loads(report.read_text())
    dropped_path = directory / "dropped.txt"
    dropped = dropped_path.read_text().splitlines() if dropped_path.exists() else []
    return RunResult(
        role=role,
        cases=int(document["test_cases"]["generated"]),
        failures=document["failures"],
        errors=document["errors"],
        exit_code=completed.returncode,
        seconds=time.monotonic() - started,
        output=output,
        dropped=Counter(line.split("\t")[0] for line in dropped),
    )


def isolated_command(argv: list[str]) -> list[str] | None:
    """`argv` in a new network namespace with loopback only; None where one cannot be made."""
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    if unshare is None or ip is None:
        return None
    namespace = [unshare, "--net", "--map-root-user"]
    probe = subprocess.run([*namespace, ip, "link", "set", "lo", "up"], capture_output=True, check=False)
    if probe.returncode != 0:
        return None
    return [*namespace, "sh", "-c", f'{ip} link set lo up && exec "$@"', "sh", *argv]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fuzz_contract", description="Fuzz the whole contract against a live service."
    )
    parser.add_argument("--max-examples", type=int, default=25, help="cases per operation and phase")
    parser.add_argument("--min-cases", type=int, default=5000, help="fail unless this many ran in all")
    parser.add_argument("--phases", default=",".join(PHASES), help="schemathesis phases to run")
    parser.add_argument("--seed", type=int, default=20261201, help="the generator's seed")
    parser.add_argument("--roles", default=",".join(ROLES), help="admin, consumer or both")
    parser.add_argument("--keep", type=Path, help="keep the logs and reports in this directory")
    parser.add_argument("--no-isolation", action="store_true", help="run without a network namespace")
    args = parser.parse_args(argv)
    if not args.no_isolation and os.environ.get(NETNS_ENV) != "1":
        command = isolated_command([sys.executable, "-m", "tests.fuzz_contract", *(argv or sys.argv[1:])])
        if command is None:
            print(
                "cannot make a network namespace (unshare, ip); --no-isolation runs without", file=sys.stderr
            )
            return 2
        return subprocess.run(command, env={**os.environ, NETNS_ENV: "1"}, cwd=REPO, check=False).returncode
    run = Run(args.phases, args.max_examples, args.seed)
    roles = [role.strip() for role in args.roles.split(",") if role.strip()]
    root = args.keep or Path(tempfile.mkdtemp(prefix="provider-fuzz-"))
    started = time.monotonic()
    # The roles run side by side, each against a service of its own: most of the time is spent
    # waiting for answers, so two runs take little longer than one.
    with ThreadPoolExecutor(len(roles)) as pool:
        results = list(pool.map(lambda role: run_role(role, run, root / role), roles))
    for result in results:
        if result.failed:
            print(result.output)
    for result in results:
        print(
            f"{result.role}: {result.cases} cases, {sum(f['count'] for f in result.failures)} failures, "
            f"{sum(e['count'] for e in result.errors)} errors in {result.seconds:.0f} s"
        )
        for rule, count in sorted(result.dropped.items()):
            print(f"  not counted: {count} x {rule}")
    total = sum(result.cases for result in results)
    print(f"total: {total} cases in {time.monotonic() - started:.0f} s (seed {run.seed}); logs in {root}")
    failed = any(result.failed for result in results)
    if total < args.min_cases:
        print(f"fewer cases than the {args.min_cases} asked for")
        failed = True
    if args.keep is None and not failed:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
