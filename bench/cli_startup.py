"""How long `provider --help`, `provider version` and `import provider.app` take to start, against
the interpreter starting and doing nothing (`python -c pass`) in the same run, interleaved.

    python -m bench.cli_startup [--rounds 20]

Target: --help and version under 0.3 s on the machine, i.e. a small ratio to the bare start.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "python -c pass (baseline)": [sys.executable, "-c", "pass"],
    "provider --help": [sys.executable, "-m", "provider", "--help"],
    "provider version": [sys.executable, "-m", "provider", "version"],
    "import provider.app": [sys.executable, "-c", "import provider.app"],
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    rounds = parser.parse_args().rounds
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(rounds):  # interleaved, so that a busy moment hits every command alike
        for name, argv in COMMANDS.items():
            start = time.perf_counter()
            subprocess.run(argv, stdout=subprocess.DEVNULL, check=True)  # noqa: S603 - our own commands
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["python -c pass (baseline)"])
    print(f"{rounds} rounds; median wall time, and its ratio to the bare interpreter start")
    for name, values in times.items():
        median = statistics.median(values)
        spread = max(values) - min(values)
        print(f"  {name:<28} {median * 1000:7.1f} ms  ({median / base:5.1f}x)  spread {spread * 1000:.0f} ms")


if __name__ == "__main__":
    main()
