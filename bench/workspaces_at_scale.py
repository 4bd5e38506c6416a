"""Workspaces at scale on radosgw (Ceph's default bucket quota: 1,000 per user).

Before: the bucket-per-workspace layout, workspaces created through the API until the server
refuses a bucket. After: the shared-buckets layout, `--count` (10,000) workspaces through the
API; then, for a sample of random pairs, one workspace's temporary credentials try the other's
objects, listing and prefix, and their own. Baseline, in the same run: the same storage work
without the service (`S3Storage.create_location` called directly at the same concurrency: the
user, the role and its policy that each workspace needs), so the ratio is what the API, the
store and the service add to it.

    python -m bench.workspaces_at_scale [--count 10000] [--concurrency 32] [--pairs 50] [--s3-endpoint URL]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
import uuid
from typing import Any

import aiohttp

from bench.common import ADMIN_KEY, S3_ACCESS, S3_SECRET, Service, percentile, s3_storage, with_s3
from provider.backends.storage.s3 import S3Options, S3Storage
from provider.backends.storage.s3_isolation import Place
from provider.backends.storage.s3_signed import Keys, SignedHttp

ROLE_PER_WORKSPACE = {"sts": {"mode": "role_per_workspace", "duration_seconds": 900}}


async def create_many(
    session: aiohttp.ClientSession, url: str, count: int, concurrency: int, stop_on_error: bool
) -> tuple[list[dict[str, Any]], list[float], str | None, float]:
    """Create up to `count` workspaces; the made ones, their latencies (ms), the first error, wall s."""
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with session.get(f"{url}/api/v1/me", headers=admin) as r:
        operator = (await r.json())["tenant"]["id"]
    made: list[dict[str, Any]] = []
    latencies: list[float] = []
    error: str | None = None
    remaining = iter(range(count))
    started = time.perf_counter()

    async def worker() -> None:
        nonlocal error
        for _ in remaining:
            if error is not None and stop_on_error:
                return
            begun = time.perf_counter()
            body = {"tenant_id": operator, "name": "scale"}
            async with session.post(f"{url}/api/v1/workspaces", json=body, headers=admin) as r:
                answer = await r.json()
                if r.status != 201:
                    error = error or f"HTTP {r.status}: {answer.get('detail')}"
                    continue
            latencies.append((time.perf_counter() - begun) * 1000)
            made.append(answer)
            if len(made) % 1000 == 0:
                print(
                    f"    {len(made)} made, {len(made) / (time.perf_counter() - started):.0f}/s", flush=True
                )

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return made, latencies, error, time.perf_counter() - started


async def bare_creations(endpoint: str, count: int, concurrency: int) -> float:
    """Workspaces per second with the storage alone: the same requests, no API or store."""
    storage = S3Storage(
        S3Options(
            endpoint,
            "us-east-1",
            S3_ACCESS,
            S3_SECRET,
            isolation="role_per_workspace",
            bucket_prefix=f"bench-bare-{uuid.uuid4().hex[:6]}-",
            layout="shared_buckets",
        )
    )
    try:
        names = iter(range(count))

        async def worker() -> None:
            for i in names:
                await storage.create_location(storage.location_for(f"{storage.options.bucket_prefix}ws-{i}"))

        await storage.create_location(storage.location_for(f"{storage.options.bucket_prefix}warm"))
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return count / (time.perf_counter() - started)
    finally:
        await storage.close()


async def attack_pairs(
    session: aiohttp.ClientSession, url: str, endpoint: str, made: list[dict[str, Any]], pairs: int
) -> tuple[int, list[str]]:
    """For random pairs (A, B): A's credentials write and list A, and reach nothing of B."""
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    http = SignedHttp("us-east-1")
    breaches: list[str] = []
    checked = 0
    try:
        for a, b in (random.sample(made, 2) for _ in range(pairs)):
            mine, theirs = Place.of(a["storage"]["location"]), Place.of(b["storage"]["location"])
            async with session.put(
                f"{url}/api/v1/workspaces/{b['id']}/objects/secret.txt", data=b"B", headers=admin
            ) as r:
                assert r.status == 201, await r.text()
            async with session.post(f"{url}/api/v1/workspaces/{a['id']}/credentials", headers=admin) as r:
                creds = await r.json()
                assert r.status == 201, creds
            keys = Keys(creds["access_key_id"], creds["secret_access_key"], creds["session_token"])
            own = await http.send(
                "PUT", f"{endpoint}/{mine.bucket}/{mine.prefix}own.txt", "s3", keys, form=b"A"
            )
            listed = await http.send(
                "GET",
                f"{endpoint}/{mine.bucket}",
                "s3",
                keys,
                query={"list-type": "2", "prefix": mine.prefix},
            )
            if not (own.ok and listed.ok):
                breaches.append(f"{a['id']} cannot use its own workspace ({own.status}, {listed.status})")
            attempts = {
                "read B": ("GET", f"{endpoint}/{theirs.bucket}/{theirs.prefix}secret.txt", None, None),
                "write B": ("PUT", f"{endpoint}/{theirs.bucket}/{theirs.prefix}x", None, b"x"),
                "list B": (
                    "GET",
                    f"{endpoint}/{theirs.bucket}",
                    {"list-type": "2", "prefix": theirs.prefix},
                    None,
                ),
                "list bucket": ("GET", f"{endpoint}/{mine.bucket}", {"list-type": "2"}, None),
                "role of B": None,
            }
            for label, attempt in attempts.items():
                if attempt is None:
                    form = {
                        "Action": "AssumeRole",
                        "Version": "2011-06-15",
                        "RoleArn": f"arn:aws:iam:::role/{theirs.name}",
                        "RoleSessionName": "x",
                        "DurationSeconds": "900",
                    }
                    answer = await http.send("POST", endpoint, "sts", keys, form=form)
                else:
                    method, target, query, body = attempt
                    answer = await http.send(method, target, "s3", keys, query=query, form=body)
                if answer.ok:
                    breaches.append(f"{a['id']} -> {b['id']}: {label} worked")
            checked += 1
    finally:
        await http.close()
    return checked, breaches


async def run(endpoint: str, count: int, concurrency: int, pairs: int) -> None:
    print(f"Workspaces at scale on radosgw {endpoint}, concurrency {concurrency}")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        # After: prefixes of shared buckets (first, while the server's bucket quota has room).
        bare = await bare_creations(endpoint, min(count, 1000), concurrency)
        layout = {"layout": "shared_buckets", "shared_buckets": 8, **ROLE_PER_WORKSPACE}
        service = Service(
            {"storage": s3_storage(endpoint, f"bench-shared-{uuid.uuid4().hex[:6]}-", **layout)}
        )
        try:
            made, latencies, error, wall = await create_many(session, service.url, count, concurrency, False)
            checked, breaches = await attack_pairs(session, service.url, endpoint, made, pairs)
        finally:
            service.stop()
        # Before: a bucket each, until the server's bucket quota ends it; removed again after.
        own = {"storage": s3_storage(endpoint, f"bench-own-{uuid.uuid4().hex[:6]}-", **ROLE_PER_WORKSPACE)}
        service = Service(own)
        try:
            own_made, _, own_error, own_wall = await create_many(
                session, service.url, 1100, concurrency, True
            )
            admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
            gate = asyncio.Semaphore(concurrency)

            async def remove(workspace: dict[str, Any]) -> None:
                target = f"{service.url}/api/v1/workspaces/{workspace['id']}"
                async with gate, session.delete(target, headers=admin):
                    pass

            await asyncio.gather(*(remove(workspace) for workspace in own_made))
        finally:
            service.stop()
    print("  before: layout bucket_per_workspace")
    print(
        f"    created {len(own_made)} workspaces in {own_wall:.1f} s ({len(own_made) / own_wall:.0f}/s), "
        f"then: {own_error}"
    )
    rate = len(made) / wall
    print("  after: layout shared_buckets (8 buckets)")
    print(
        f"    created {len(made)} of {count} workspaces in {wall:.1f} s: {rate:.0f}/s; "
        f"errors: {error or 'none'}"
    )
    print(
        f"    creation latency p50 {percentile(latencies, 0.5):.0f} ms, "
        f"p99 {percentile(latencies, 0.99):.0f} ms"
    )
    print(f"    baseline (the same storage work without the service): {bare:.0f}/s")
    print(f"    ratio service / baseline: {rate / bare:.2f}")
    print(f"    isolation: {checked} random pairs attacked, {len(breaches)} escapes")
    for breach in breaches:
        print(f"      ESCAPE: {breach}")
    if breaches or len(made) < count:
        raise SystemExit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--pairs", type=int, default=50)
    parser.add_argument("--s3-endpoint")
    args = parser.parse_args()
    with_s3(
        args.s3_endpoint,
        7495,
        lambda endpoint: asyncio.run(run(endpoint, args.count, args.concurrency, args.pairs)),
    )


if __name__ == "__main__":
    main()
