"""Local directories the backends keep their data in."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path


async def ensure_writable(path: Path) -> None:
    """Create `path` if needed; raise PermissionError when this process cannot write in it
    (readiness and start-up: a read-only or foreign directory fails here, not at the first job)."""

    def check() -> None:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(f"{path} is not writable")

    await asyncio.to_thread(check)
