"""Objects API throughput: a 1 GiB upload and download through the service against a baseline
doing the same work, in one run, rounds alternating.

- fs: the baseline is a bare aiohttp server (bench/bare_files.py) streaming the same bytes to and
  from a file on the same disk (fsync'd, sendfile), through the same HTTP client. Writing and
  reading the file in this process, with no HTTP at all, is printed too, for reference.
- s3: the baseline is aioboto3 talking to the same radosgw directly (multipart upload with the
  service's part size and concurrency, a streamed GET).

    python -m bench.objects_throughput [--size-mib 1024] [--backend fs|s3|both] [--s3-endpoint URL]

Prints MiB/s for each path, the ratio service/baseline (target >= 0.9 both ways) and the
service's memory growth during the transfers (target < 64 MiB). Without --s3-endpoint the s3
part starts the test radosgw (tests/services/radosgw.sh).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aioboto3
import aiohttp
from botocore.config import Config

from bench.common import ADMIN_KEY, S3_ACCESS, S3_SECRET, Service, free_port, s3_storage, with_s3

MiB = 1024 * 1024
BLOCK = os.urandom(8 * MiB)


async def blocks(total: int, piece: int = 1 * MiB) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        start = sent % len(BLOCK)
        size = min(piece, total - sent, len(BLOCK) - start)
        yield BLOCK[start : start + size]
        sent += size


async def through_api(service: Service, size: int) -> tuple[float, float, int]:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    timeout = aiohttp.ClientTimeout(total=3600)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
        async with session.get(service.url + "/api/v1/me") as response:
            tenant = (await response.json())["tenant"]["id"]
        async with session.post(service.url + "/api/v1/workspaces", json={"tenant_id": tenant}) as response:
            workspace = (await response.json())["id"]
        url = f"{service.url}/api/v1/workspaces/{workspace}/objects/bench.bin"
        baseline = service.rss_kib()
        service.reset_peak()
        upload, download = await transfer(session, url, size)
        growth = service.peak_kib() - baseline  # peak (VmHWM) over the resident size before
        async with session.delete(f"{service.url}/api/v1/workspaces/{workspace}"):
            pass
    return upload, download, growth


async def transfer(session: aiohttp.ClientSession, url: str, size: int) -> tuple[float, float]:
    """Seconds to PUT `size` bytes to `url` and to GET them back, with the same client for every path."""
    started = time.perf_counter()
    async with session.put(url, data=blocks(size), headers={"Content-Length": str(size)}) as response:
        assert response.status == 201, await response.text()
    upload = time.perf_counter() - started
    started = time.perf_counter()
    received = 0
    async with session.get(url) as response:
        async for chunk in response.content.iter_chunked(MiB):
            received += len(chunk)
    download = time.perf_counter() - started
    assert received == size
    return upload, download


async def through_bare(base: str, size: int) -> tuple[float, float]:
    """The same transfer against the bare aiohttp file server."""
    timeout = aiohttp.ClientTimeout(total=3600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        url = f"{base}/files/{uuid.uuid4().hex}.bin"
        times = await transfer(session, url, size)
        async with session.delete(url):
            pass
    return times


async def direct_fs(directory: Path, size: int) -> tuple[float, float]:
    """The same bytes to and from a plain file on the same filesystem (fsync'd, as the service does)."""
    path = directory / f"direct-{uuid.uuid4().hex}.bin"
    started = time.perf_counter()
    with path.open("wb") as handle:
        async for block in blocks(size):
            handle.write(block)
        handle.flush()
        os.fsync(handle.fileno())
    upload = time.perf_counter() - started
    started = time.perf_counter()
    with path.open("rb") as handle:
        while handle.read(MiB):
            pass
    download = time.perf_counter() - started
    path.unlink()
    return upload, download


async def direct_s3(endpoint: str, size: int, part: int, in_flight: int) -> tuple[float, float]:
    """aioboto3 multipart upload (same part size and concurrency) and a streamed GET."""
    session = aioboto3.Session(
        aws_access_key_id=S3_ACCESS, aws_secret_access_key=S3_SECRET, region_name="us-east-1"
    )
    config = Config(signature_version="s3v4", s3={"addressing_style": "path"}, max_pool_connections=50)
    bucket = f"bench-direct-{uuid.uuid4().hex[:8]}"
    async with session.client("s3", endpoint_url=endpoint, config=config) as s3:
        await s3.create_bucket(Bucket=bucket)
        started = time.perf_counter()
        upload_id = (await s3.create_multipart_upload(Bucket=bucket, Key="k"))["UploadId"]
        parts: list[dict[str, Any]] = []
        pending: set[asyncio.Task[None]] = set()

        async def send(number: int, body: bytes) -> None:
            answer = await s3.upload_part(
                Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=number, Body=body
            )
            parts.append({"PartNumber": number, "ETag": answer["ETag"]})

        number = 0
        async for body in blocks(size, part):
            while len(pending) >= in_flight:
                _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            number += 1
            pending.add(asyncio.ensure_future(send(number, body)))
        await asyncio.gather(*pending)
        parts.sort(key=lambda p: int(p["PartNumber"]))
        await s3.complete_multipart_upload(
            Bucket=bucket, Key="k", UploadId=upload_id, MultipartUpload={"Parts": parts}
        )
        upload = time.perf_counter() - started
        started = time.perf_counter()
        answer = await s3.get_object(Bucket=bucket, Key="k")
        async with answer["Body"] as stream:
            while await stream.content.read(MiB):
                pass
        download = time.perf_counter() - started
        await s3.delete_object(Bucket=bucket, Key="k")
        await s3.delete_bucket(Bucket=bucket)
    return upload, download


def report(
    name: str, size: int, api: tuple[float, float, int], direct: tuple[float, float], baseline: str
) -> dict[str, float]:
    mib = size / MiB
    rows = {
        "api_upload_mib_s": mib / api[0],
        "direct_upload_mib_s": mib / direct[0],
        "api_download_mib_s": mib / api[1],
        "direct_download_mib_s": mib / direct[1],
    }
    up, down = (
        rows["api_upload_mib_s"] / rows["direct_upload_mib_s"],
        rows["api_download_mib_s"] / rows["direct_download_mib_s"],
    )
    print(f"[{name}] {mib:.0f} MiB; baseline: {baseline}")
    for label, ratio in (("upload", up), ("download", down)):
        api_rate, direct_rate = rows[f"api_{label}_mib_s"], rows[f"direct_{label}_mib_s"]
        print(
            f"  {label:<9} service {api_rate:8.1f} MiB/s   baseline {direct_rate:8.1f} MiB/s"
            f"   ratio {ratio:.2f} (target >= 0.90)"
        )
    print(f"  service memory growth during the transfers: {api[2] / 1024:.1f} MiB (target < 64 MiB)")
    return {**rows, "upload_ratio": up, "download_ratio": down, "memory_growth_mib": api[2] / 1024}


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


async def rounds(
    count: int, api_run: Any, direct_run: Any
) -> tuple[tuple[float, float, int], tuple[float, float]]:
    """Alternate the two paths so that page-cache and disk state favour neither; medians."""
    apis, directs = [], []
    for _ in range(count):
        apis.append(await api_run())
        directs.append(await direct_run())
    api = (median([a[0] for a in apis]), median([a[1] for a in apis]), max(a[2] for a in apis))
    direct = (median([d[0] for d in directs]), median([d[1] for d in directs]))
    return api, direct


def bare_files(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    """bench/bare_files.py in its own process, once it answers; the process and its URL."""
    port = free_port()
    process = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "bench.bare_files", str(directory), str(port)]
    )
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/files/none", timeout=1)
        except urllib.error.HTTPError:
            break  # it answers (404)
        except OSError:
            time.sleep(0.1)
    return process, f"http://127.0.0.1:{port}"


def run_fs(size: int, count: int) -> None:
    service = Service({"storage": {"backend": "fs"}, "workspaces": {"quota_bytes": 4 * size}})
    bare, base = bare_files(service.dir / "bare")

    async def measure() -> tuple[tuple[float, float, int], tuple[float, float], tuple[float, float]]:
        api, served = await rounds(
            count, lambda: through_api(service, size), lambda: through_bare(base, size)
        )
        return api, served, await direct_fs(service.dir, size)

    try:
        api, served, direct = asyncio.run(measure())
    finally:
        service.stop()
        bare.terminate()
    report("fs", size, api, served, "a bare aiohttp server streaming the file (bench/bare_files.py)")
    mib = size / MiB
    print(
        f"  for reference, the file in this process with no HTTP: write {mib / direct[0]:.0f} MiB/s "
        f"(fsync'd), read {mib / direct[1]:.0f} MiB/s (page cache)"
    )


async def run_s3(size: int, endpoint: str, count: int) -> None:
    part, in_flight = 8 * MiB, 2
    service = Service(
        {
            "storage": s3_storage(endpoint, "bench-", part_size_bytes=part, parts_in_flight=in_flight),
            "workspaces": {"quota_bytes": 4 * size},
        }
    )
    try:
        api, direct = await rounds(
            count, lambda: through_api(service, size), lambda: direct_s3(endpoint, size, part, in_flight)
        )
    finally:
        service.stop()
    report("s3 (radosgw)", size, api, direct, "aioboto3 to the same radosgw")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--backend", choices=["fs", "s3", "both"], default="both")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians are reported")
    parser.add_argument(
        "--s3-endpoint", help="an S3 server with the test admin credentials (default: start radosgw)"
    )
    args = parser.parse_args()
    size = args.size_mib * MiB
    if args.backend in ("fs", "both"):
        run_fs(size, args.rounds)
    if args.backend in ("s3", "both"):
        with_s3(args.s3_endpoint, 7495, lambda endpoint: asyncio.run(run_s3(size, endpoint, args.rounds)))


if __name__ == "__main__":
    main()
