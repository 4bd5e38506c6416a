"""One contract for every storage backend: the filesystem, S3 (a real Ceph radosgw), and the
in-memory fake that service tests use (tests/fakes.py), so that the fake stays honest."""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from provider.backends.storage.fs import FilesystemStorage
from provider.backends.storage.s3 import S3Options, S3Storage
from provider.backends.storage.s3_isolation import Place
from provider.domain.errors import ChecksumMismatch, InvalidKey, NotFound, NotSupported, PayloadTooLarge
from provider.domain.pagination import PageRequest
from provider.domain.ranges import ByteRange
from provider.domain.workspaces import key_problems
from provider.services.ports import PutLimits, Storage
from tests.conftest import S3_ACCESS_KEY, S3_SECRET_KEY
from tests.fakes import MemoryStorage

MiB = 1024 * 1024


@pytest.fixture(
    params=[
        "fs",
        pytest.param("s3", marks=pytest.mark.s3),
        pytest.param("s3-shared", marks=pytest.mark.s3),
        "memory",
    ]
)
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    if request.param == "fs":
        backend: Storage = FilesystemStorage(tmp_path / "storage")
    elif request.param == "memory":
        backend = MemoryStorage()
    else:
        endpoint = request.getfixturevalue("radosgw")
        backend = S3Storage(
            S3Options(
                endpoint,
                "us-east-1",
                S3_ACCESS_KEY,
                S3_SECRET_KEY,
                part_size=5 * MiB,
                parts_in_flight=2,
                bucket_prefix=f"pt-{uuid.uuid4().hex[:8]}-",
                layout="shared_buckets" if request.param == "s3-shared" else "bucket_per_workspace",
                shared_buckets=2,
            )
        )
    yield backend
    if isinstance(backend, S3Storage) and backend.options.layout == "shared_buckets":
        s3 = await backend._client("s3")
        for index in range(backend.options.shared_buckets):  # empty by now, unless a test failed
            with contextlib.suppress(ClientError):
                await s3.delete_bucket(Bucket=backend.shared_bucket(index))
    await backend.close()


@pytest.fixture
async def location(storage: Storage) -> AsyncIterator[str]:
    where = storage.location_for(f"pt-{uuid.uuid4().hex[:12]}")
    await storage.create_location(where)
    yield where
    await storage.delete_location(where)


def shared(storage: Storage) -> bool:
    return isinstance(storage, S3Storage) and storage.options.layout == "shared_buckets"


async def stream(data: bytes, piece: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), piece):
        yield data[start : start + piece]


async def read_all(storage: Storage, location: str, key: str, byte_range: ByteRange | None = None) -> bytes:
    opened = await storage.open(location, key, byte_range)
    try:
        return b"".join([chunk async for chunk in opened.chunks])
    finally:
        await opened.aclose()


async def test_put_get_head_delete_round_trip(storage: Storage, location: str) -> None:
    data = os.urandom(100_000)
    stored = await storage.put(location, "dir/näme with space.bin", stream(data), PutLimits())
    assert stored.info.size == len(data) and stored.replaced_size is None
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    head = await storage.head(location, "dir/näme with space.bin")
    assert head is not None and head.size == len(data) and head.etag == stored.info.etag
    assert await read_all(storage, location, "dir/näme with space.bin") == data
    assert await read_all(storage, location, "dir/näme with space.bin", ByteRange(10, 19)) == data[10:20]
    replaced = await storage.put(location, "dir/näme with space.bin", stream(b"short"), PutLimits())
    assert replaced.replaced_size == len(data) and replaced.info.etag != stored.info.etag
    deleted = await storage.delete(location, "dir/näme with space.bin")
    assert deleted is not None and deleted.size == 5
    assert await storage.head(location, "dir/näme with space.bin") is None
    assert await storage.delete(location, "dir/näme with space.bin") is None
    with pytest.raises(NotFound):
        await storage.open(location, "dir/näme with space.bin", None)


async def test_large_object_streams_in_parts_binary_safe(storage: Storage, location: str) -> None:
    data = os.urandom(12 * MiB + 123)  # three parts on S3
    stored = await storage.put(
        location, "big.bin", stream(data, 1 * MiB), PutLimits(sha256=hashlib.sha256(data).digest())
    )
    assert stored.info.size == len(data)
    assert (
        hashlib.sha256(await read_all(storage, location, "big.bin")).digest() == hashlib.sha256(data).digest()
    )
    tail = await read_all(storage, location, "big.bin", ByteRange(len(data) - 1000, len(data) - 1))
    assert tail == data[-1000:]


async def test_empty_object(storage: Storage, location: str) -> None:
    stored = await storage.put(location, "empty", stream(b""), PutLimits())
    assert stored.info.size == 0 and await read_all(storage, location, "empty") == b""


@pytest.mark.parametrize("size", [1000, 11 * MiB])
async def test_wrong_checksum_stores_nothing_and_keeps_the_old_object(
    storage: Storage, location: str, size: int
) -> None:
    await storage.put(location, "k", stream(b"original"), PutLimits())
    data = os.urandom(size)
    with pytest.raises(ChecksumMismatch):
        await storage.put(
            location, "k", stream(data, MiB), PutLimits(sha256=hashlib.sha256(b"other").digest())
        )
    with pytest.raises(ChecksumMismatch):
        await storage.put(location, "k", stream(data, MiB), PutLimits(md5=hashlib.md5(b"other").digest()))  # noqa: S324
    assert await read_all(storage, location, "k") == b"original"
    with pytest.raises(ChecksumMismatch):
        await storage.put(location, "new", stream(data, MiB), PutLimits(sha256=b"\0" * 32))
    assert await storage.head(location, "new") is None


@pytest.mark.parametrize("size", [1000, 11 * MiB])
async def test_size_limit_stores_nothing(storage: Storage, location: str, size: int) -> None:
    with pytest.raises(PayloadTooLarge):
        await storage.put(location, "k", stream(os.urandom(size), MiB), PutLimits(max_bytes=size - 1))
    assert await storage.head(location, "k") is None
    stored = await storage.put(location, "k", stream(os.urandom(size), MiB), PutLimits(max_bytes=size))
    assert stored.info.size == size


@pytest.mark.parametrize("size", [1000, 11 * MiB])
async def test_interrupted_upload_leaves_nothing(storage: Storage, location: str, size: int) -> None:
    async def broken() -> AsyncIterator[bytes]:
        data = os.urandom(size)
        yield data[: size // 2]
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await storage.put(location, "k", broken(), PutLimits())
    assert await storage.head(location, "k") is None
    assert (await storage.list(location, "", PageRequest(10))).items == []
    if isinstance(storage, S3Storage):  # no multipart upload left behind to pay for
        s3 = await storage._client("s3")
        place = Place.of(location)
        uploads = await s3.list_multipart_uploads(Bucket=place.bucket, Prefix=place.prefix)
        assert uploads.get("Uploads", []) == []


async def test_list_by_prefix_in_key_order_with_pages(storage: Storage, location: str) -> None:
    keys = ["a-c", "a/b", "a/c/d", "b", "a/c/e", "ab"]
    for key in keys:
        await storage.put(location, key, stream(key.encode()), PutLimits())
    everything = await storage.list(location, "", PageRequest(100))
    assert [o.key for o in everything.items] == sorted(keys) and everything.next_after is None
    under_a = await storage.list(location, "a/", PageRequest(100))
    assert [o.key for o in under_a.items] == ["a/b", "a/c/d", "a/c/e"]
    starting_a = await storage.list(location, "a", PageRequest(100))
    assert [o.key for o in starting_a.items] == ["a-c", "a/b", "a/c/d", "a/c/e", "ab"]
    seen, after = [], None
    while True:
        page = await storage.list(location, "", PageRequest(2, after))
        seen += [o.key for o in page.items]
        if page.next_after is None:
            break
        after = page.next_after
    assert seen == sorted(keys)
    assert (await storage.list(location, "zzz", PageRequest(10))).items == []
    usage = await storage.usage(location)
    assert (usage.objects, usage.bytes) == (len(keys), sum(len(k) for k in keys))


async def test_delete_location_removes_everything_and_is_idempotent(storage: Storage) -> None:
    name = storage.location_for(f"pt-{uuid.uuid4().hex[:12]}")
    await storage.create_location(name)
    await storage.create_location(name)  # idempotent
    for i in range(5):
        await storage.put(name, f"x/{i}", stream(b"data"), PutLimits())
    await storage.delete_location(name)
    await storage.delete_location(name)
    if shared(storage):  # a prefix of a shared bucket: nothing left under it, the bucket stays
        assert (await storage.list(name, "", PageRequest(10))).items == []
        return
    with pytest.raises(NotFound):
        await storage.list(name, "", PageRequest(10))


async def test_locations_hold_their_own_objects_only(storage: Storage) -> None:
    """Two workspaces side by side (in one shared bucket when the layout has only one): each
    lists, counts, reads and deletes its own objects, and deleting one leaves the other whole."""
    names = [storage.location_for(f"pt-{uuid.uuid4().hex[:12]}") for _ in range(2)]
    if isinstance(storage, S3Storage) and storage.options.layout == "shared_buckets":
        while Place.of(names[1]).bucket != Place.of(names[0]).bucket:
            names[1] = storage.location_for(f"pt-{uuid.uuid4().hex[:12]}")
    a, b = names
    for where in names:
        await storage.create_location(where)
    try:
        await storage.put(a, "k", stream(b"A"), PutLimits())
        await storage.put(a, "only-a", stream(b"A"), PutLimits())
        await storage.put(b, "k", stream(b"BB"), PutLimits())
        assert await read_all(storage, a, "k") == b"A" and await read_all(storage, b, "k") == b"BB"
        assert [o.key for o in (await storage.list(b, "", PageRequest(10))).items] == ["k"]
        assert await storage.head(b, "only-a") is None
        usage = await storage.usage(b)
        assert (usage.objects, usage.bytes) == (1, 2)
        await storage.delete_location(a)
        assert await read_all(storage, b, "k") == b"BB"
        assert [o.key for o in (await storage.list(b, "", PageRequest(10))).items] == ["k"]
    finally:
        for where in names:
            await storage.delete_location(where)


async def test_presign_where_supported(storage: Storage, location: str) -> None:
    import aiohttp

    await storage.put(location, "p.txt", stream(b"presigned"), PutLimits())
    url = await storage.presign(location, "p.txt", "GET", 60)
    if isinstance(storage, FilesystemStorage | MemoryStorage):
        assert url is None
        return
    assert url is not None
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200 and await response.read() == b"presigned"


async def test_the_longest_key_segments_the_key_rules_allow_work_on_every_backend(
    storage: Storage, location: str
) -> None:
    """Keys may have segments of up to 255 bytes (provider.domain.workspaces): the filesystem's
    file name limit, which S3 does not have; both must take them."""
    key = "/".join(["é" * 127 + "x"] * 4)  # 4 segments of 255 bytes: 1023 bytes
    assert key_problems(key) == [] and key_problems(key + "y") != []
    if shared(storage):
        # S3 keys end at 1024 bytes with the workspace's prefix: the rest is refused as a bad key,
        # before anything is sent, and the longest key that fits works.
        with pytest.raises(InvalidKey, match="shared buckets"):
            await storage.put(location, key, stream(b"data"), PutLimits())
        assert (await storage.list(location, "", PageRequest(10))).items == []
        room = 1024 - len(Place.of(location).prefix)
        key = "/".join(["x" * 255] * 3) + "/" + "y" * (room - 768)
        assert key_problems(key) == [] and len(key) == room
    await storage.put(location, key, stream(b"data"), PutLimits())
    assert await read_all(storage, location, key) == b"data"
    listed = await storage.list(location, "", PageRequest(10))
    assert [o.key for o in listed.items] == [key]
    deleted = await storage.delete(location, key)
    assert deleted is not None and deleted.size == 4


async def test_what_jobs_and_consumers_get_beside_the_objects_api(storage: Storage, location: str) -> None:
    """The filesystem gives nothing of its own: jobs and consumers use the objects API with a
    workspace token. S3 has the bucket's address for EDC, and temporary credentials once
    storage.s3.sts is set up (this one has none, so it says so)."""
    if isinstance(storage, FilesystemStorage | MemoryStorage):
        assert await storage.job_access(location, 900) is None
        assert await storage.consumer_credentials(location, 900) is None
        assert storage.consumer_address(location) is None
        return
    assert isinstance(storage, S3Storage)
    place = Place.of(location)
    assert storage.consumer_address(location) == {
        "type": "AmazonS3",
        "bucketName": place.bucket,
        "region": "us-east-1",
        "objectPrefix": place.prefix,
        "endpointOverride": storage.options.endpoint_url,
    }
    assert place.shared == shared(storage) and place.prefix == ("" if not place.shared else f"{place.name}/")
    with pytest.raises(NotSupported, match=r"storage\.s3\.sts"):
        await storage.job_access(location, 900)
    with pytest.raises(NotSupported, match=r"storage\.s3\.sts"):
        await storage.consumer_credentials(location, 900)
