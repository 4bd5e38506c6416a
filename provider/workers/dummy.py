"""The `dummy` asset's worker: wait SLEEP_SECONDS, then copy SOURCE to DESTINATION.

It reads and writes bytes only, so any input comes out unchanged. It copies rather than moves:
on Kubernetes its input is a read-only mount.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path


def main() -> int:
    source = Path(os.environ["SOURCE"])
    destination = Path(os.environ["DESTINATION"])
    seconds = float(os.environ.get("SLEEP_SECONDS", "0"))
    print(f"dummy: waiting {seconds:g} s", flush=True)
    time.sleep(seconds)
    if not source.exists():
        print(f"dummy: input {source} does not exist", file=sys.stderr, flush=True)
        return 2
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, destination)
    print(f"dummy: copied {destination.stat().st_size} bytes to {destination}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
