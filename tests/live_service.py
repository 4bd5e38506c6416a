"""`provider serve` as a subprocess, as an operator starts it: for tests that drive the service
from outside (the CLI as subprocesses, the console in a browser)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.conftest import ADMIN_KEY, WAIT_SECONDS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(root: Path, **settings: Any) -> Iterator[str]:
    """Run the service with data in `root` and these settings (admin key, port, data_dir set
    here); yield its base URL once /readyz answers; stop it with SIGINT afterwards. Its output
    is in root/service.log."""
    port = free_port()
    config = {
        "data_dir": str(root / "data"),
        "auth": {"bootstrap_admin_key": ADMIN_KEY, "key_cache_seconds": 0},
        **settings,
        "server": {"port": port, **settings.get("server", {})},
    }
    (root / "config.yaml").write_text(json.dumps(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVIDER_")}
    with open(root / "service.log", "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "provider", "serve", "--config", str(root / "config.yaml")],
            cwd=root,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            try:
                with urllib.request.urlopen(url + "/readyz", timeout=1):
                    break
            except OSError:
                assert process.poll() is None, (root / "service.log").read_text()
                assert time.monotonic() < deadline, "the service did not start"
                time.sleep(0.2)
        yield url
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def request(
    url: str, method: str = "GET", body: Any = None, key: str = ADMIN_KEY, data: bytes | None = None
) -> Any:
    """One JSON request with urllib (no event loop needed); `data` sends bytes instead."""
    content_type = "application/octet-stream" if data is not None else "application/json"
    data = data if data is not None else (json.dumps(body).encode() if body is not None else None)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": content_type}
    with urllib.request.urlopen(
        urllib.request.Request(url, data, headers, method=method), timeout=30
    ) as response:
        text = response.read()
    return json.loads(text) if text else None
