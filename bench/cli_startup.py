"""How long `provider --help`, `provider version` and `import provider.app` take to start, against
the interpreter starting and doing nothing (`python -c pass`) in the same run, interleaved; and
how long a restarted `provider serve` (SQLite, local defaults, an existing data directory) takes
until `/readyz` answers 200, against a bare aiohttp server until it answers.

    python -m bench.cli_startup [--rounds 20]

Targets: --help and version under 0.3 s on the machine; `import provider.app` under 1 s, so that
a restarted replica serves again quickly.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.common import ADMIN_KEY, REPO, free_port

COMMANDS = {
    "python -c pass (baseline)": [sys.executable, "-c", "pass"],
    "provider --help": [sys.executable, "-m", "provider", "--help"],
    "provider version": [sys.executable, "-m", "provider", "version"],
    "import provider.app": [sys.executable, "-c", "import provider.app"],
}


BARE_SERVER = """
import sys
from aiohttp import web
async def ready(request): return web.json_response({"status": "ready"})
app = web.Application()
app.router.add_get("/readyz", ready)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
"""


def until_ready(argv: list[str], url: str) -> float:
    """Seconds from spawning `argv` until `url` answers 200; the process is stopped after."""
    start = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
    try:
        while True:
            try:
                with urllib.request.urlopen(url, timeout=1) as answer:  # noqa: S310 - loopback
                    if answer.status == 200:
                        return time.perf_counter() - start
            except OSError:
                if process.poll() is not None:
                    raise RuntimeError(f"{argv} ended before it was ready") from None
                time.sleep(0.01)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    rounds = parser.parse_args().rounds
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    directory = Path(tempfile.mkdtemp(prefix="provider-startup-"))
    port = free_port()
    config = {
        "data_dir": str(directory / "data"),
        "auth": {"bootstrap_admin_key": ADMIN_KEY},
        "assets": {"directory": str(REPO / "config" / "assets")},
        "server": {"port": port},
    }
    (directory / "config.yaml").write_text(json.dumps(config))
    serve = [sys.executable, "-m", "provider", "serve", "--config", str(directory / "config.yaml")]
    readyz = f"http://127.0.0.1:{port}/readyz"
    until_ready(serve, readyz)  # the first start makes the database; the rounds restart
    starts: dict[str, list[float]] = {"bare aiohttp server (baseline)": [], "provider serve (restart)": []}
    for _ in range(rounds):  # interleaved, so that a busy moment hits every command alike
        for name, argv in COMMANDS.items():
            start = time.perf_counter()
            subprocess.run(argv, stdout=subprocess.DEVNULL, check=True)  # noqa: S603 - our own commands
            times[name].append(time.perf_counter() - start)
        if len(starts["provider serve (restart)"]) < min(rounds, 5):
            starts["bare aiohttp server (baseline)"].append(
                until_ready([sys.executable, "-c", BARE_SERVER, str(port)], readyz)
            )
            starts["provider serve (restart)"].append(until_ready(serve, readyz))
    base = statistics.median(times["python -c pass (baseline)"])
    print(f"{rounds} rounds; median wall time, and its ratio to the bare interpreter start")
    for name, values in times.items():
        median = statistics.median(values)
        spread = max(values) - min(values)
        print(f"  {name:<28} {median * 1000:7.1f} ms  ({median / base:5.1f}x)  spread {spread * 1000:.0f} ms")
    bare = statistics.median(starts["bare aiohttp server (baseline)"])
    print(f"until /readyz answers 200, median of {len(starts['provider serve (restart)'])}")
    for name, values in starts.items():
        median = statistics.median(values)
        print(f"  {name:<32} {median * 1000:7.1f} ms  ({median / bare:5.1f}x)")


if __name__ == "__main__":
    main()
