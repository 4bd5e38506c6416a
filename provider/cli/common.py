"""What the command modules share: the one-line error, settings, the API client and progress bars."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from provider.client import ApiClient
from provider.config import Settings, load_settings

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress


class CliError(Exception):
    """A failure to report in one line, with exit status 1."""


def _settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    return load_settings(args.config, **overrides)


def _client(args: argparse.Namespace) -> ApiClient:
    return ApiClient(args.url, args.key)


def _progress() -> Progress:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=_console(),
        transient=False,
    )


def _console() -> Console:
    from rich.console import Console

    return Console(stderr=True)


def _size(value: int | None) -> str:
    if value is None:
        return "?"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(value)
