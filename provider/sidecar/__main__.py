"""`python -m provider.sidecar stage-in|stage-out --spec FILE --root DIR`

What it reads (the job description, its environment), how it exits and what it leaves behind is
the sidecar's contract with the backends, written down in provider/sidecar/contract.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path

from provider.sidecar.contract import Command, Env, ExitCode, JobDescription, StorageKind
from provider.sidecar.remote import ApiWorkspace, S3Workspace, Workspace
from provider.sidecar.staging import StagingError, stage_in, stage_out


def workspace_from_env() -> Workspace:
    kind = os.environ.get(Env.STORAGE_KIND, StorageKind.API)
    if kind == StorageKind.API:
        return ApiWorkspace(
            os.environ[Env.API_URL],
            os.environ[Env.WORKSPACE_ID],
            os.environ[Env.WORKSPACE_TOKEN],
        )
    if kind == StorageKind.S3:
        return S3Workspace(
            os.environ.get(Env.S3_ENDPOINT),
            os.environ[Env.S3_BUCKET],
            os.environ[Env.S3_REGION],
            os.environ.get(Env.S3_PREFIX, ""),
        )
    raise KeyError(f"{Env.STORAGE_KIND}={kind!r} (expected api or s3)")


async def run(command: Command, job: JobDescription, root: Path) -> int:
    async with workspace_from_env() as workspace:
        if command is Command.STAGE_IN:
            await stage_in(job, workspace, root)
        else:
            manifest = await stage_out(job, workspace, root)
            print(json.dumps(manifest.to_json()), flush=True)
    return ExitCode.DONE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="provider.sidecar", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=[c.value for c in Command])
    parser.add_argument("--spec", help=f"job description JSON file (default: ${Env.JOB})")
    parser.add_argument(
        "--root", required=True, help="staging directory (stage-in) or result directory (stage-out)"
    )
    parser.add_argument(
        "--results",
        help="stage-in: also create this (empty) result directory, writable by the worker whatever its user",
    )
    args = parser.parse_args(argv)
    command = Command(args.command)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s sidecar %(levelname)s %(message)s", stream=sys.stderr
    )
    try:
        raw = Path(args.spec).read_text() if args.spec else os.environ[Env.JOB]
        job = JobDescription.from_json(json.loads(raw))
    except (KeyError, OSError, ValueError, TypeError) as exc:
        print(f"sidecar: no usable job spec: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    if args.results and command is Command.STAGE_IN:
        results = Path(args.results)
        results.mkdir(parents=True, exist_ok=True)
        results.chmod(0o777)
    try:
        return asyncio.run(run(command, job, root))
    except KeyError as exc:
        print(f"sidecar: missing setting {exc}", file=sys.stderr)
        return ExitCode.USAGE
    except StagingError as exc:
        print(f"sidecar: {args.command} failed: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:
        print(f"sidecar: {args.command} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return ExitCode.FAILED


if __name__ == "__main__":
    sys.exit(main())
