"""`provider demo`: the main job end to end, on embedded defaults or against a running service.

It creates a workspace, uploads an input, runs the `dummy` asset, follows its states and logs,
downloads the output, checks that it is byte for byte the input, and says where everything is.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from aiohttp import web
from rich.console import Console
from rich.table import Table

from provider.client import ApiClient
from provider.config import Settings
from provider.domain.tenants import Role

DEMO_PARTICIPANT = "did:web:demo.example"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _start_service(settings: Settings, console: Console) -> tuple[web.AppRunner, str, str]:
    """The service in this process on a free port, and a consumer key for the demo tenant."""
    from provider.api.context import CONTEXT
    from provider.app import create_app

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    settings = settings.model_copy(
        update={
            "server": settings.server.model_copy(
                update={"host": "127.0.0.1", "port": port, "public_url": url}
            )
        }
    )
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    tenants = app[CONTEXT].tenants
    tenant = await tenants.find_or_create(DEMO_PARTICIPANT, "Demo consumer")
    issued = await tenants.issue_key(tenant.id, Role.CONSUMER, "provider demo")
    console.print(
        f"[bold]service[/] running in this process at {url} (data in {settings.data_dir.resolve()})"
    )
    console.print(f"[bold]tenant[/] {DEMO_PARTICIPANT} with a new consumer key {issued.key.prefix}…")
    return runner, url, issued.secret


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def _demo(url: str, key: str, folder: Path, sleep: str, console: Console) -> int:
    source = folder / "input.bin"
    digest = await asyncio.to_thread(_sha256, source)
    async with ApiClient(url, key) as api:
        me = await api.json("GET", "/api/v1/me")
        body: dict[str, Any] = {"name": "demo", "labels": {"created-by": "provider-demo"}}
        if me["role"] == "admin":
            body["tenant_id"] = me["tenant"]["id"]
        workspace = await api.json("POST", "/api/v1/workspaces", json=body)
        ws = workspace["id"]
        console.print(f"[bold]workspace[/] {ws} ({workspace['storage']['backend']} storage)")
        with console.status("uploading the input"):
            await api.upload(ws, "inputs/input.bin", source, lambda n: None)
        console.print(f"[bold]uploaded[/] {source} -> inputs/input.bin (1 MiB, sha256 {digest[:16]}…)")
        execution = await api.json(
            "POST",
            "/api/v1/executions",
            json={
                "asset_id": "dummy",
                "workspace_id": ws,
                "inputs": {"source": "inputs/input.bin"},
                "env": {"SLEEP_SECONDS": sleep},
                "labels": {"demo": "true"},
            },
            headers={"Idempotency-Key": f"demo-{ws}"},
        )
        execution_id = execution["id"]
        console.print(f"[bold]execution[/] {execution_id} of asset dummy {execution['asset']['version']}")
        started = time.monotonic()
        shown = 0
        while True:
            for item in execution["history"][shown:]:
                console.print(
                    f"  {time.monotonic() - started:6.2f} s  state [cyan]{item['state']}[/]"
                    + (f" ({item['reason']})" if item["reason"] else "")
                )
            shown = len(execution["history"])
            if execution["state"] in ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"):
                break
            answer = await api.session.get(
                f"{url}/api/v1/executions/{execution_id}",
                params={"wait": "10", "version": str(execution["version"])},
            )
            if answer.status == 200:
                execution = await answer.json()
            answer.release()
        async with api.session.get(f"{url}/api/v1/executions/{execution_id}/logs") as response:
            logs = (await response.text()).strip()
        console.print("[bold]worker log[/]")
        for line in logs.splitlines() or ["(empty)"]:
            console.print(f"  | {line}")
        if execution["state"] != "COMPLETE":
            console.print(f"[red]the execution ended {execution['state']}: {execution['message']}[/]")
            return 1
        outputs = await api.json("GET", f"/api/v1/executions/{execution_id}/outputs")
        output = outputs["outputs"][0]
        target = folder / "output.bin"
        with console.status("downloading the output"):
            await api.download(ws, output["key"], target, lambda total: None, lambda n: None)
        same = await asyncio.to_thread(_sha256, target) == digest == output["sha256"]
    table = Table(title="provider demo", show_header=False)
    table.add_row("service", url)
    table.add_row("workspace", ws)
    table.add_row("execution", f"{execution_id}: {execution['state']} in {time.monotonic() - started:.1f} s")
    table.add_row("input", f"{source}  ->  inputs/input.bin")
    table.add_row("output", f"{output['key']}  ->  {target}")
    table.add_row(
        "checksum", f"sha256 {output['sha256']}  ({'identical to the input' if same else 'DIFFERENT'})"
    )
    table.add_row("logs", f"workspace object executions/{execution_id}/logs/worker.log")
    table.add_row("API docs", f"{url}/docs")
    console.print(table)
    return 0 if same else 1


def run_demo(settings: Settings, url: str | None, key: str | None, folder: Path, sleep: float) -> int:
    console = Console(stderr=False, highlight=False)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "input.bin").write_bytes(os.urandom(1024 * 1024))

    async def main() -> int:
        runner = None
        target_url, target_key = url, key
        if target_url is None:
            runner, target_url, target_key = await _start_service(settings, console)
        try:
            assert target_key is not None
            return await _demo(target_url, target_key, folder, f"{sleep:g}", console)
        finally:
            if runner is not None:
                await runner.cleanup()

    return asyncio.run(main())


if __name__ == "__main__":
    sys.exit(run_demo(Settings(), None, None, Path("demo"), 1))
