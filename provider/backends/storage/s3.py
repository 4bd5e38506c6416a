"""S3 storage (AWS, MinIO, Ceph RGW) through aioboto3.

Two layouts (`storage.s3.layout`): a bucket per workspace, or workspaces as prefixes of a few
shared buckets, for servers whose bucket quota is smaller than the number of workspaces (Ceph
allows 1,000 buckets per user, AWS 10,000 per account by default). A location names either
(`Place`); every key the service reads or writes is the workspace's prefix plus the key.

Uploads stream as multipart uploads with a bounded number of parts in memory; a failed or
interrupted upload is aborted, so nothing partial becomes visible. Temporary credentials come
from STS AssumeRole and open the workspace's bucket only; how that is made to hold on each
server, and the start-up check that proves it, is in s3_isolation.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

import aioboto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from provider.aio import SingleFlight
from provider.backends.storage.s3_isolation import (
    Endpoints,
    Isolation,
    Place,
    RolePerWorkspace,
    SharedRole,
    probe_chaining,
)
from provider.backends.storage.s3_signed import Keys, SignedHttp, parse_time
from provider.backends.storage.streams import DigestingCounter, rechunk
from provider.config import ConfigError
from provider.domain.errors import FieldProblem, InvalidKey, NotFound, NotSupported, Unavailable
from provider.domain.pagination import Page, PageRequest
from provider.domain.ranges import ByteRange
from provider.domain.workspaces import MAX_KEY_BYTES, Usage
from provider.services.ports import (
    ObjectInfo,
    ObjectStream,
    PutLimits,
    StorageAccess,
    StoredObject,
    TemporaryCredentials,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class S3Options:
    endpoint_url: str | None
    region: str
    access_key_id: str | None
    secret_access_key: str | None
    public_endpoint_url: str | None = None
    addressing_style: str = "path"
    part_size: int = 8 * 1024 * 1024
    parts_in_flight: int = 2
    role_arn: str | None = None
    sts_endpoint_url: str | None = None
    max_connections: int = 50
    isolation: str = "shared_role"  # or "role_per_workspace" (Ceph RGW): see s3_isolation
    admin_endpoint_url: str | None = None  # RGW's admin API; default: endpoint_url
    check_isolation: bool = True
    allow_role_chaining: bool = False
    check_duration_seconds: int = 900
    bucket_prefix: str = "provider-"
    layout: str = "bucket_per_workspace"  # or "shared_buckets"
    shared_buckets: int = 8


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _missing(exc: ClientError) -> bool:
    return _status(exc) == 404 or _code(exc) in ("NoSuchKey", "NoSuchBucket", "404", "NotFound")


def _key(place: Place, key: str) -> str:
    """The key in the bucket. S3 keys have at most 1024 bytes, the prefix included: in a shared
    bucket, the longest keys the key rules allow do not fit, and are refused with a 400."""
    full = place.prefix + key
    size = len(full.encode("utf-8", "surrogatepass"))
    if size > MAX_KEY_BYTES:
        room = MAX_KEY_BYTES - len(place.prefix.encode())
        raise InvalidKey(
            f"invalid object key: it has {size - len(place.prefix.encode())} bytes of UTF-8, and this "
            f"storage keeps workspaces in shared buckets under a prefix, which leaves {room} for the key",
            [FieldProblem("path.key", f"must be at most {room} bytes of UTF-8 on this storage")],
        )
    return full


def _etag(value: str) -> str:
    return value if value.startswith('"') else f'"{value}"'


class S3Storage:
    name = "s3"

    def __init__(self, options: S3Options) -> None:
        self.options = options
        self._session = aioboto3.Session(
            aws_access_key_id=options.access_key_id,
            aws_secret_access_key=options.secret_access_key,
            region_name=options.region,
        )
        self._config = Config(
            signature_version="s3v4",
            s3={"addressing_style": options.addressing_style},
            max_pool_connections=options.max_connections,
            retries={"max_attempts": 4, "mode": "standard"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self._stack = AsyncExitStack()
        self._clients: dict[str, Any] = {}
        self._lock = asyncio.Lock()
        self._http = SignedHttp(options.region)
        s3_endpoint = (options.endpoint_url or f"https://s3.{options.region}.amazonaws.com").rstrip("/")
        self._endpoints = Endpoints(
            s3=s3_endpoint,
            sts=(options.sts_endpoint_url or s3_endpoint).rstrip("/"),
            admin=(options.admin_endpoint_url or s3_endpoint).rstrip("/"),
        )
        self.isolation: Isolation | None = None
        if options.isolation == "role_per_workspace":
            service = Keys(options.access_key_id or "", options.secret_access_key or "")
            self.isolation = RolePerWorkspace(self._client, self._http, self._endpoints, service)
        elif options.role_arn:
            self.isolation = SharedRole(lambda: self._client("sts"), options.role_arn)
        self._shared_ready: set[str] = set()
        self._shared_flight: SingleFlight[str, None] = SingleFlight()

    def location_for(self, name: str) -> str:
        """Its own bucket, or a prefix of the shared bucket that the name's hash picks: every
        replica picks the same, and a changed bucket count moves no existing workspace."""
        if self.options.layout != "shared_buckets":
            return name
        index = (
            int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % self.options.shared_buckets
        )
        return f"{self.shared_bucket(index)}/{name}"

    def shared_bucket(self, index: int) -> str:
        return f"{self.options.bucket_prefix}shared-{index}"

    async def _shared(self, bucket: str) -> None:
        """Make a shared bucket (and its bucket policy) once per process; idempotent on the server."""
        if bucket in self._shared_ready:
            return

        async def make() -> None:
            await self._create_bucket(bucket)
            if self.isolation is not None:
                await self.isolation.bucket_made(bucket)
            self._shared_ready.add(bucket)

        await self._shared_flight.do(bucket, make)

    async def _client(self, kind: str) -> Any:
        """Clients are opened once and shared; `public` presigns URLs for the consumers' endpoint."""
        if kind not in self._clients:
            async with self._lock:
                if kind not in self._clients:
                    service, endpoint = {
                        "s3": ("s3", self.options.endpoint_url),
                        "public": ("s3", self.options.public_endpoint_url or self.options.endpoint_url),
                        "sts": ("sts", self.options.sts_endpoint_url or self.options.endpoint_url),
                        "iam": ("iam", self.options.admin_endpoint_url or self.options.endpoint_url),
                        "probe": ("s3", self.options.endpoint_url),
                    }[kind]
                    config = self._config
                    if kind == "sts":
                        # Servers set their own minimum session length (Ceph: rgw_sts_min_session_duration),
                        # so botocore's client-side 900 s floor is not applied to STS.
                        config = config.merge(Config(parameter_validation=False))
                    elif kind == "probe":  # readiness: one quick try, the caller decides what next
                        config = config.merge(
                            Config(retries={"max_attempts": 1}, connect_timeout=3, read_timeout=5)
                        )
                    client = self._session.client(service, endpoint_url=endpoint, config=config)
                    self._clients[kind] = await self._stack.enter_async_context(client)
        return self._clients[kind]

    async def ping(self) -> None:
        """A listing of a bucket that need not exist: NoSuchBucket proves the endpoint answers and
        accepts our signature; a bad key, a refused signature or no answer raise."""
        s3 = await self._client("probe")
        try:
            await s3.list_objects_v2(Bucket=f"{self.options.bucket_prefix}readiness", MaxKeys=1)
        except ClientError as exc:
            if _code(exc) != "NoSuchBucket":
                raise Unavailable(f"S3 refused the service's credentials: {_code(exc) or exc}") from exc

    async def verify(self) -> None:
        """Reach the server, then prove that one workspace's credentials open nothing else
        (s3_isolation)."""
        try:
            await self.ping()
        except (Unavailable, BotoCoreError, OSError, ValueError) as exc:
            await self.close()
            endpoint = self.options.endpoint_url or f"AWS S3 in {self.options.region}"
            raise ConfigError(
                f"storage.s3.endpoint_url: cannot use the S3 server at {endpoint}: {exc}"
            ) from exc
        if self.options.layout == "shared_buckets":
            try:
                await asyncio.gather(
                    *(self._shared(self.shared_bucket(i)) for i in range(self.options.shared_buckets))
                )
            except (Unavailable, ClientError, BotoCoreError, OSError) as exc:
                await self.close()
                raise ConfigError(f"storage.s3.layout: cannot make the shared buckets: {exc}") from exc
        if self.isolation is None or not self.options.check_isolation:
            return
        try:
            breaches = await probe_chaining(
                self.isolation,
                self._http,
                self._endpoints,
                self.create_location,
                self.delete_location,
                self.location_for,
                self.options.bucket_prefix,
                self.options.check_duration_seconds,
            )
        except (Unavailable, ClientError, BotoCoreError, OSError) as exc:
            await self.close()  # the service does not start: nothing else will close them
            raise ConfigError(
                f"storage.s3: cannot check workspace isolation on the S3 server: {exc}"
            ) from exc
        if not breaches:
            log.info("S3 workspace isolation checked", extra={"mode": self.isolation.mode})
            return
        found = "; ".join(breaches)
        if self.options.allow_role_chaining:
            log.critical(
                "S3 WORKSPACE ISOLATION IS BROKEN: workspace credentials can escape their bucket (%s). "
                "Running anyway because storage.s3.sts.allow_role_chaining is true.",
                found,
            )
            return
        await self.close()
        raise ConfigError(
            f"storage.s3.sts.mode: with mode {self.isolation.mode!r} a workspace's temporary credentials "
            f"escape their bucket on this S3 server ({found}). On Ceph RGW use mode role_per_workspace "
            "(docs/storage.md); storage.s3.sts.allow_role_chaining: true starts anyway."
        )

    async def create_location(self, location: str) -> None:
        place = Place.of(location)
        bucket = self._shared(place.bucket) if place.shared else self._create_bucket(place.bucket)
        if self.isolation is None:
            await bucket
            return
        # The bucket and its credentials' user and role are independent: made side by side,
        # a workspace costs the longer of the two chains of requests, not their sum.
        made = await asyncio.gather(bucket, self.isolation.provision(place), return_exceptions=True)
        failed = next((m for m in made if isinstance(m, BaseException)), None)
        try:
            if failed is not None:
                raise failed
            if not place.shared:
                await self.isolation.bucket_made(place.bucket)
        except BaseException:
            # Nothing of a workspace that was not made stays behind: no bucket, user or role.
            with contextlib.suppress(Exception):
                await self.delete_location(location)
            raise

    async def _create_bucket(self, location: str) -> None:
        s3 = await self._client("s3")
        try:
            if self.options.region == "us-east-1":
                await s3.create_bucket(Bucket=location)
            else:
                await s3.create_bucket(
                    Bucket=location, CreateBucketConfiguration={"LocationConstraint": self.options.region}
                )
        except ClientError as exc:
            if _code(exc) != "BucketAlreadyOwnedByYou":
                raise Unavailable(f"cannot create bucket {location}: {_code(exc) or exc}") from exc

    async def delete_location(self, location: str) -> None:
        place = Place.of(location)
        if self.isolation is not None:  # credentials end first, then the data
            await self.isolation.retire(place)
        s3 = await self._client("s3")
        where = {"Bucket": place.bucket, "Prefix": place.prefix}
        try:
            paginator = s3.get_paginator("list_multipart_uploads")
            async for result in paginator.paginate(**where):
                for upload in result.get("Uploads", []):
                    await s3.abort_multipart_upload(
                        Bucket=place.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
            paginator = s3.get_paginator("list_objects_v2")
            async for result in paginator.paginate(**where):
                keys = [{"Key": item["Key"]} for item in result.get("Contents", [])]
                if keys:
                    await s3.delete_objects(Bucket=place.bucket, Delete={"Objects": keys, "Quiet": True})
            if not place.shared:
                await s3.delete_bucket(Bucket=place.bucket)
        except ClientError as exc:
            if not _missing(exc):
                raise Unavailable(f"cannot delete the workspace at {location}: {_code(exc) or exc}") from exc

    async def put(
        self, location: str, key: str, chunks: AsyncIterator[bytes], limits: PutLimits
    ) -> StoredObject:
        s3 = await self._client("s3")
        place = Place.of(location)
        previous = await self.head(location, key)
        counter = DigestingCounter(limits)
        parts = rechunk(chunks, self.options.part_size)
        try:
            head = [await anext(parts, b"")]
            following = await anext(parts, None)
            if following is None:  # small: one PUT, after the checks
                counter.update(head[0])
                sha256 = counter.verify()
                await s3.put_object(Bucket=place.bucket, Key=_key(place, key), Body=head.pop())
            else:
                head.append(following)
                del following  # only `head` may hold parts, so that each is freed once sent
                sha256 = await self._multipart(s3, place.bucket, _key(place, key), counter, head, parts)
        except ClientError as exc:
            if _code(exc) == "NoSuchBucket":
                raise NotFound("storage location", location) from exc
            raise Unavailable(f"S3 refused the upload: {_code(exc) or exc}") from exc
        finally:
            await parts.aclose()
        info = await self.head(location, key)
        if info is None:  # deleted in the instant after the upload
            raise NotFound("object", key)
        return StoredObject(info, sha256, previous.size if previous else None)

    async def _multipart(
        self,
        s3: Any,
        bucket: str,
        key: str,
        counter: DigestingCounter,
        head: list[bytes],
        rest: AsyncIterator[bytes],
    ) -> str:
        """Upload parts with at most `parts_in_flight` in memory; abort on any failure."""
        upload_id = (await s3.create_multipart_upload(Bucket=bucket, Key=key))["UploadId"]
        done: list[dict[str, Any]] = []
        in_flight: set[asyncio.Task[None]] = set()

        async def send(number: int, body: bytes) -> None:
            answer = await s3.upload_part(
                Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
            )
            done.append({"PartNumber": number, "ETag": answer["ETag"]})

        try:
            number = 0
            while True:
                block = head.pop(0) if head else await anext(rest, None)
                if block is None:
                    break
                await asyncio.to_thread(counter.update, block)
                while len(in_flight) >= self.options.parts_in_flight:
                    finished, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                    for task in finished:
                        task.result()
                number += 1
                in_flight.add(asyncio.ensure_future(send(number, block)))
                del block
            for outcome in await asyncio.gather(*in_flight, return_exceptions=True):
                if isinstance(outcome, BaseException):
                    raise outcome
            in_flight.clear()
            sha256 = counter.verify()
            done.sort(key=lambda part: int(part["PartNumber"]))
            await s3.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": done}
            )
            return sha256
        except BaseException:
            for task in in_flight:
                task.cancel()
            await asyncio.shield(self._abort(s3, bucket, key, upload_id))
            raise

    async def _abort(self, s3: Any, bucket: str, key: str, upload_id: str) -> None:
        try:
            await s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        except (ClientError, BotoCoreError) as exc:
            log.warning("could not abort multipart upload of %s in %s: %s", key, bucket, exc)

    async def open(self, location: str, key: str, byte_range: ByteRange | None) -> ObjectStream:
        s3 = await self._client("s3")
        place = Place.of(location)
        params: dict[str, Any] = {"Bucket": place.bucket, "Key": _key(place, key)}
        if byte_range is not None:
            params["Range"] = f"bytes={byte_range.start}-{byte_range.end}"
        try:
            answer = await s3.get_object(**params)
        except ClientError as exc:
            if _missing(exc):
                raise NotFound("object", key) from exc
            raise Unavailable(f"S3 refused the download: {_code(exc) or exc}") from exc
        size = answer["ContentLength"]
        if "ContentRange" in answer:
            size = int(answer["ContentRange"].rsplit("/", 1)[1])
        info = ObjectInfo(key, size, _etag(answer["ETag"]), answer["LastModified"].astimezone(UTC))
        body = answer["Body"]

        async def chunks() -> AsyncIterator[bytes]:
            async with body as stream:
                # Whatever has arrived, without joining buffers: one copy fewer per chunk.
                async for block in stream.content.iter_any():
                    yield block

        return ObjectStream(info, byte_range, chunks())

    async def head(self, location: str, key: str) -> ObjectInfo | None:
        s3 = await self._client("s3")
        place = Place.of(location)
        try:
            answer = await s3.head_object(Bucket=place.bucket, Key=_key(place, key))
        except ClientError as exc:
            if _missing(exc):
                return None
            raise Unavailable(f"S3 refused a HEAD: {_code(exc) or exc}") from exc
        return ObjectInfo(
            key, answer["ContentLength"], _etag(answer["ETag"]), answer["LastModified"].astimezone(UTC)
        )

    async def list(self, location: str, prefix: str, page: PageRequest) -> Page[ObjectInfo]:
        s3 = await self._client("s3")
        place = Place.of(location)
        params: dict[str, Any] = {
            "Bucket": place.bucket,
            "Prefix": place.prefix + prefix,
            "MaxKeys": page.size,
        }
        if page.after:
            params["StartAfter"] = place.prefix + page.after[0]
        try:
            answer = await s3.list_objects_v2(**params)
        except ClientError as exc:
            if _missing(exc):
                raise NotFound("storage location", location) from exc
            raise Unavailable(f"S3 refused a listing: {_code(exc) or exc}") from exc
        cut = len(place.prefix)
        items = [
            ObjectInfo(
                item["Key"][cut:], item["Size"], _etag(item["ETag"]), item["LastModified"].astimezone(UTC)
            )
            for item in answer.get("Contents", [])
        ]
        more = bool(answer.get("IsTruncated")) and bool(items)
        return Page(items, (items[-1].key,) if more else None)

    async def delete(self, location: str, key: str) -> ObjectInfo | None:
        info = await self.head(location, key)
        if info is None:
            return None
        s3 = await self._client("s3")
        place = Place.of(location)
        await s3.delete_object(Bucket=place.bucket, Key=_key(place, key))
        return info

    async def usage(self, location: str) -> Usage:
        s3 = await self._client("s3")
        total = count = 0
        paginator = s3.get_paginator("list_objects_v2")
        place = Place.of(location)
        try:
            async for result in paginator.paginate(Bucket=place.bucket, Prefix=place.prefix):
                for item in result.get("Contents", []):
                    total += item["Size"]
                    count += 1
        except ClientError as exc:
            raise Unavailable(f"S3 refused a listing: {_code(exc) or exc}") from exc
        return Usage(total, count)

    async def presign(self, location: str, key: str, method: str, expires_seconds: int) -> str | None:
        s3 = await self._client("public")
        operation = {"GET": "get_object", "PUT": "put_object"}[method]
        place = Place.of(location)
        url: str = await s3.generate_presigned_url(
            operation, Params={"Bucket": place.bucket, "Key": _key(place, key)}, ExpiresIn=expires_seconds
        )
        return url

    async def temporary_credentials(self, location: str, duration_seconds: int) -> TemporaryCredentials:
        if self.isolation is None:
            raise NotSupported("temporary credentials need storage.s3.sts in the configuration")
        place = Place.of(location)
        credentials = await self.isolation.assume(place, duration_seconds)
        log.info(
            "temporary credentials issued",
            extra={
                "bucket": place.bucket,
                "prefix": place.prefix,
                "access_key_id": credentials["AccessKeyId"],
            },
        )
        expiration = credentials["Expiration"]
        if isinstance(expiration, str):
            expiration = parse_time(expiration)
        return TemporaryCredentials(
            access_key_id=credentials["AccessKeyId"],
            secret_access_key=credentials["SecretAccessKey"],
            session_token=credentials["SessionToken"],
            expiration=expiration.astimezone(UTC),
            endpoint_url=self.options.public_endpoint_url or self.options.endpoint_url,
            bucket=place.bucket,
            region=self.options.region,
            prefix=place.prefix,
        )

    async def job_access(self, location: str, lifetime_seconds: int) -> StorageAccess:
        return StorageAccess.bucket(await self.temporary_credentials(location, lifetime_seconds))

    async def consumer_credentials(self, location: str, duration_seconds: int) -> TemporaryCredentials:
        return await self.temporary_credentials(location, duration_seconds)

    def consumer_address(self, location: str) -> dict[str, Any]:
        """The workspace as EDC's AmazonS3 data address names it (its bucket, and its prefix in a
        shared bucket), at the endpoint consumers reach."""
        place = Place.of(location)
        address: dict[str, Any] = {
            "type": "AmazonS3",
            "bucketName": place.bucket,
            "region": self.options.region,
            "objectPrefix": place.prefix,
        }
        endpoint = self.options.public_endpoint_url or self.options.endpoint_url
        if endpoint:
            address["endpointOverride"] = endpoint
        return address

    def local_path(self, location: str, key: str) -> Path | None:
        return None

    async def close(self) -> None:
        await self._http.close()
        await self._stack.aclose()
        self._clients.clear()
