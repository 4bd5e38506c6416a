"""Polling one execution: `GET /api/v1/executions/{id}` with a consumer's API key, at the default
log level (every request logged), against a bare aiohttp handler returning the same bytes, in the
same run. Load comes from Debian's wrk (`-t1 -c64`) pinned to one core, the servers to the other;
rounds alternate between the two servers, and every round prints the CPU share of the generator
and of the server, so that it shows the server was the bottleneck.

    python -m bench.polling [--store sqlite|postgresql] [--seconds 10] [--rounds 3] [--connections 64]

Targets (issue 15): at least 0.5x the bare handler's requests per second, and a p99 at most 3x
the bare handler's.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
import urllib.request

import aiohttp

from bench.common import ADMIN_KEY, Databases, Service, free_port
from bench.wrk import Load, ensure_tools, pinned, wrk

SERVER_CORE, GENERATOR_CORE = 0, 1


async def setup(service: Service) -> tuple[str, str, bytes]:
    """A consumer's API key, a finished execution of its, and that execution as the service sends it."""
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with aiohttp.ClientSession() as session:

        async def call(
            method: str, path: str, headers: dict[str, str], **kwargs: object
        ) -> dict[str, object]:
            async with session.request(method, service.url + path, headers=headers, **kwargs) as response:  # type: ignore[arg-type]
                assert response.status < 300, (path, response.status, await response.text())
                return dict(await response.json()) if response.content_type == "application/json" else {}

        tenant = await call(
            "POST", "/api/v1/tenants", admin, json={"participant_id": "did:web:poller.example"}
        )
        key = (await call("POST", f"/api/v1/tenants/{tenant['id']}/api-keys", admin, json={}))["key"]
        consumer = {"Authorization": f"Bearer {key}"}
        workspace = (await call("POST", "/api/v1/workspaces", consumer, json={}))["id"]
        await call("PUT", f"/api/v1/workspaces/{workspace}/objects/in", consumer, data=b"x")
        body = {
            "asset_id": "dummy",
            "workspace_id": workspace,
            "inputs": {"source": "in"},
            "env": {"SLEEP_SECONDS": "0"},
        }
        execution = await call("POST", "/api/v1/executions", consumer, json=body)
        while execution["state"] not in ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR"):
            execution = await call(
                "GET", f"/api/v1/executions/{execution['id']}?wait=5&version={execution['version']}", consumer
            )
        assert execution["state"] == "COMPLETE", execution
        async with session.get(
            f"{service.url}/api/v1/executions/{execution['id']}", headers=consumer
        ) as response:
            return str(key), str(execution["id"]), await response.read()


def bare_server(body: bytes, port: int, directory: object) -> subprocess.Popen[bytes]:
    path = f"{directory}/execution.json"
    with open(path, "wb") as file:
        file.write(body)
    command = pinned(SERVER_CORE, [sys.executable, "-m", "bench.bare_server", path, str(port)])
    process = subprocess.Popen(command)  # noqa: S603
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/executions/x", timeout=1)
            return process
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the bare server did not start")


def show(name: str, load: Load) -> str:
    return (
        f"{name:<8} {load.rate:8.0f} req/s  p50 {load.p50_ms:7.2f} ms  p99 {load.p99_ms:7.2f} ms  "
        f"server CPU {load.server_cpu:4.0%}  wrk CPU {load.generator_cpu:4.0%}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    ensure_tools()
    databases = Databases()
    settings: dict[str, object] = {"logging": {"level": "INFO", "format": "json"}}
    if args.store == "postgresql":
        settings["store"] = {"url": asyncio.run(databases.create())}
    service = Service(settings, core=SERVER_CORE)
    bare = None
    ours: list[Load] = []
    theirs: list[Load] = []
    try:
        key, execution_id, body = asyncio.run(setup(service))
        port = free_port()
        bare = bare_server(body, port, service.dir)
        path = f"/api/v1/executions/{execution_id}"
        print(f"GET {path} ({len(body)} bytes of JSON), consumer key, log level INFO, store {args.store}")
        print(
            f"wrk -t1 -c{args.connections} -d{args.seconds:g}s on core {GENERATOR_CORE}; "
            f"servers on core {SERVER_CORE}"
        )
        for number in range(1, args.rounds + 1):
            # Alternate, so that neither side profits from a quieter moment of the machine.
            mine = wrk(
                service.url + path,
                service.process.pid,
                args.seconds,
                args.connections,
                GENERATOR_CORE,
                {"Authorization": f"Bearer {key}"},
            )
            base = wrk(
                f"http://127.0.0.1:{port}{path}", bare.pid, args.seconds, args.connections, GENERATOR_CORE
            )
            assert mine.errors == 0 and base.errors == 0, (mine, base)
            ours.append(mine)
            theirs.append(base)
            print(f"round {number}: ratio {mine.rate / base.rate:.2f}, p99 {mine.p99_ms / base.p99_ms:.1f}x")
            print("  " + show("service", mine))
            print("  " + show("bare", base))
    finally:
        service.stop()
        if bare is not None:
            bare.terminate()
        if databases.names:
            asyncio.run(databases.drop_all())
    ratios = [m.rate / b.rate for m, b in zip(ours, theirs, strict=True)]
    p99s = [m.p99_ms / b.p99_ms for m, b in zip(ours, theirs, strict=True)]
    print(
        f"throughput ratio median {statistics.median(ratios):.2f} "
        f"(spread {min(ratios):.2f}-{max(ratios):.2f}; target >= 0.50)"
    )
    print(
        f"p99 ratio median {statistics.median(p99s):.1f}x "
        f"(spread {min(p99s):.1f}-{max(p99s):.1f}; target <= 3.0)"
    )
    if max(b.generator_cpu for b in theirs) > 0.9:
        print(
            "warning: wrk used over 90% of its core against the bare server: "
            "the baseline may be the generator's limit"
        )


if __name__ == "__main__":
    main()
