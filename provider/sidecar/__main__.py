"""`python -m provider.sidecar stage-in|stage-out --spec FILE --root DIR`

The job spec (JSON) comes from --spec or $PROVIDER_JOB_SPEC; the workspace from
$PROVIDER_STORAGE_KIND: "api" ($PROVIDER_API_URL, $PROVIDER_WORKSPACE_ID, $PROVIDER_WORKSPACE_TOKEN)
or "s3" ($PROVIDER_S3_ENDPOINT, $PROVIDER_S3_BUCKET, $PROVIDER_S3_REGION and the AWS_* variables
of temporary credentials). Exit codes: 0 done, 3 a required output is missing, 2 bad usage,
1 any other failure. Stage-out prints the manifest as JSON on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path

from provider.sidecar.remote import ApiWorkspace, S3Workspace, Workspace
from provider.sidecar.staging import JobFiles, StagingError, stage_in, stage_out


def workspace_from_env() -> Workspace:
    kind = os.environ.get("PROVIDER_STORAGE_KIND", "api")
    if kind == "api":
        return ApiWorkspace(
            os.environ["PROVIDER_API_URL"],
            os.environ["PROVIDER_WORKSPACE_ID"],
            os.environ["PROVIDER_WORKSPACE_TOKEN"],
        )
    if kind == "s3":
        return S3Workspace(
            os.environ.get("PROVIDER_S3_ENDPOINT"),
            os.environ["PROVIDER_S3_BUCKET"],
            os.environ["PROVIDER_S3_REGION"],
        )
    raise KeyError(f"PROVIDER_STORAGE_KIND={kind!r} (expected api or s3)")


async def run(command: str, job: JobFiles, root: Path) -> int:
    async with workspace_from_env() as workspace:
        if command == "stage-in":
            await stage_in(job, workspace, root)
        else:
            manifest = await stage_out(job, workspace, root)
            print(json.dumps(manifest), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="provider.sidecar", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["stage-in", "stage-out"])
    parser.add_argument("--spec", help="job spec JSON file (default: $PROVIDER_JOB_SPEC)")
    parser.add_argument(
        "--root", required=True, help="staging directory (stage-in) or result directory (stage-out)"
    )
    parser.add_argument(
        "--results",
        help="stage-in: also create this (empty) result directory, writable by the worker whatever its user",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s sidecar %(levelname)s %(message)s", stream=sys.stderr
    )
    try:
        raw = Path(args.spec).read_text() if args.spec else os.environ["PROVIDER_JOB_SPEC"]
        job = JobFiles.from_json(json.loads(raw))
    except (KeyError, OSError, ValueError, TypeError) as exc:
        print(f"sidecar: no usable job spec: {exc}", file=sys.stderr)
        return 2
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    if args.results and args.command == "stage-in":
        results = Path(args.results)
        results.mkdir(parents=True, exist_ok=True)
        results.chmod(0o777)
    try:
        return asyncio.run(run(args.command, job, root))
    except KeyError as exc:
        print(f"sidecar: missing setting {exc}", file=sys.stderr)
        return 2
    except StagingError as exc:
        print(f"sidecar: {args.command} failed: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:
        print(f"sidecar: {args.command} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
