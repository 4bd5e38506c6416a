"""GET /api/v1/executions/{id} throughput at concurrency 64, against a bare aiohttp handler that
returns the same JSON from memory, in one run (target: at least 0.5 of the bare figure).

    python -m bench.execution_get [--seconds 10] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
import urllib.request

import aiohttp

from bench.common import ADMIN_KEY, Service, free_port


async def load(url: str, headers: dict[str, str], seconds: float, concurrency: int) -> tuple[float, int]:
    """Requests per second for `seconds`, from `concurrency` clients on keep-alive connections."""
    count = errors = 0
    stop = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:

        async def client() -> None:
            nonlocal count, errors
            while time.monotonic() < stop:
                async with session.get(url) as response:
                    await response.read()
                    if response.status == 200:
                        count += 1
                    else:
                        errors += 1

        started = time.monotonic()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        return count / (time.monotonic() - started), errors


async def setup(service: Service) -> tuple[str, bytes]:
    """A finished execution of the dummy asset to read, and its JSON as the service sends it."""
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.get(service.url + "/api/v1/me") as response:
            tenant = (await response.json())["tenant"]["id"]
        async with session.post(service.url + "/api/v1/workspaces", json={"tenant_id": tenant}) as response:
            workspace = (await response.json())["id"]
        async with session.put(f"{service.url}/api/v1/workspaces/{workspace}/objects/in", data=b"x"):
            pass
        body = {
            "asset_id": "dummy",
            "workspace_id": workspace,
            "inputs": {"source": "in"},
            "env": {"SLEEP_SECONDS": "0"},
        }
        async with session.post(service.url + "/api/v1/executions", json=body) as response:
            execution = await response.json()
        while execution["state"] not in ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR"):
            await asyncio.sleep(0.2)
            async with session.get(f"{service.url}/api/v1/executions/{execution['id']}") as response:
                execution = await response.json()
        await asyncio.sleep(0.5)
        async with session.get(f"{service.url}/api/v1/executions/{execution['id']}") as response:
            return execution["id"], await response.read()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    service = Service({})
    bare = None
    try:
        execution_id, body = asyncio.run(setup(service))
        path = service.dir / "execution.json"
        path.write_bytes(body)
        port = free_port()
        bare = subprocess.Popen([sys.executable, "-m", "bench.bare_server", str(path), str(port)])  # noqa: S603
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/executions/x", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        url = f"{service.url}/api/v1/executions/{execution_id}"
        # Alternate, twice each, so that neither side profits from a quieter machine.
        service_rates, bare_rates = [], []
        for _ in range(2):
            rate, errors = asyncio.run(load(url, headers, args.seconds, args.concurrency))
            assert errors == 0, errors
            service_rates.append(rate)
            rate, _ = asyncio.run(
                load(
                    f"http://127.0.0.1:{port}/api/v1/executions/{execution_id}",
                    {},
                    args.seconds,
                    args.concurrency,
                )
            )
            bare_rates.append(rate)
    finally:
        service.stop()
        if bare is not None:
            bare.terminate()
    ours, baseline = max(service_rates), max(bare_rates)
    print(f"GET /api/v1/executions/{{id}} at concurrency {args.concurrency}, {len(body)} bytes of JSON")
    ratio = ours / baseline
    print(f"  service {ours:8.0f} req/s   bare aiohttp {baseline:8.0f} req/s")
    print(f"  ratio {ratio:.2f} (target >= 0.50)")


if __name__ == "__main__":
    main()
