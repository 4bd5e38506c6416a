"""Who may open a workspace's bucket with temporary credentials, and proof that nobody else can.

Two set-ups, chosen by `storage.s3.sts.mode`:

- `shared_role` (AWS, MinIO): the service assumes one role and narrows every session to one
  bucket with a session policy. It holds because those servers never let a session assume a
  role again: AWS does not admit a role session through a trust policy that names a user, and
  MinIO refuses AssumeRole with a session token.
- `role_per_workspace` (Ceph RGW): Ceph admits a role's own sessions through a trust policy
  that names the user who assumed it, whatever the session policy says and however the request
  is signed, so any session of a shared role can chain to the whole role. Instead each workspace
  gets its own user (made through RGW's admin API, its keys never leave the service) and its own
  role, which only that user may assume and which allows that bucket only. A session can then
  chain to nothing but its own workspace's role; deleting the role ends every session at once.

Either set-up serves both layouts (`Place`): a workspace's own bucket, or a prefix of a shared
bucket, where the policies name the prefix's objects and allow listings of that prefix only.

`probe_chaining` performs the attack at start-up on scratch workspaces, so that a server that
behaves otherwise is found before a consumer finds it.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from botocore.exceptions import ClientError

from provider.backends.storage.s3_signed import (
    Answer,
    Keys,
    SignedHttp,
    error_code,
    parse_assumed_credentials,
)
from provider.domain.errors import Unavailable

log = logging.getLogger(__name__)

OBJECT_ACTIONS = [
    "s3:GetObject",
    "s3:PutObject",
    "s3:DeleteObject",
    "s3:AbortMultipartUpload",
    "s3:ListMultipartUploadParts",
]
BUCKET_ACTIONS = ["s3:ListBucket", "s3:ListBucketMultipartUploads", "s3:GetBucketLocation"]


def _compact(document: dict[str, Any]) -> str:
    # Ceph wants compact JSON; STS caps session policies at 2048 characters.
    return json.dumps(document, separators=(",", ":"))


@dataclass(frozen=True)
class Place:
    """Where a workspace lives in S3: its own bucket (location `bucket`), or a prefix of a shared
    bucket (location `bucket/name`, objects under `name/`)."""

    bucket: str
    name: str  # the workspace's own name: its bucket, or its prefix without the slash
    shared: bool

    @classmethod
    def of(cls, location: str) -> Place:
        bucket, _, name = location.partition("/")
        return cls(bucket, name, True) if name else cls(bucket, bucket, False)

    @property
    def prefix(self) -> str:
        """What every key of the workspace starts with in its bucket."""
        return f"{self.name}/" if self.shared else ""


def bucket_policy(bucket: str) -> str:
    """What a workspace's credentials may do: objects and listings of one bucket, nothing else."""
    return _compact(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": BUCKET_ACTIONS, "Resource": [f"arn:aws:s3:::{bucket}"]},
                {"Effect": "Allow", "Action": OBJECT_ACTIONS, "Resource": [f"arn:aws:s3:::{bucket}/*"]},
            ],
        }
    )


def prefix_policy(bucket: str, prefix: str) -> str:
    """The same within a shared bucket: objects under the prefix, and listings that name it.
    A listing without a prefix, or of the bucket's uploads (which name other workspaces' keys),
    matches no statement and is refused."""
    return _compact(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": ["s3:ListBucket"],
                    "Resource": [f"arn:aws:s3:::{bucket}"],
                    "Condition": {"StringLike": {"s3:prefix": [f"{prefix}*"]}},
                },
                {
                    "Effect": "Allow",
                    "Action": ["s3:GetBucketLocation"],
                    "Resource": [f"arn:aws:s3:::{bucket}"],
                },
                {
                    "Effect": "Allow",
                    "Action": OBJECT_ACTIONS,
                    "Resource": [f"arn:aws:s3:::{bucket}/{prefix}*"],
                },
            ],
        }
    )


def policy(place: Place) -> str:
    """What the credentials of the workspace at `place` may do."""
    return prefix_policy(place.bucket, place.prefix) if place.shared else bucket_policy(place.bucket)


@dataclass(frozen=True)
class Endpoints:
    s3: str
    sts: str
    admin: str


class Isolation(Protocol):
    """How temporary credentials for one workspace are made, and what each workspace needs for it."""

    mode: str

    async def provision(self, place: Place) -> None:
        """Create what the workspace's credentials need (nothing, or a user and a role); idempotent.
        Runs while the bucket itself is being made: it needs no bucket yet."""

    async def bucket_made(self, bucket: str) -> None:
        """What a bucket needs once it is there (a bucket policy): a workspace's own bucket, or a
        shared bucket when it is made; idempotent."""

    async def retire(self, place: Place) -> None:
        """Remove it again, ending every session of the workspace where the server allows; idempotent."""

    async def assume(self, place: Place, duration_seconds: int) -> dict[str, Any]:
        """STS credentials for the workspace: AccessKeyId, SecretAccessKey, SessionToken, Expiration."""

    def chain_targets(self, place: Place, other: Place) -> list[str]:
        """Role ARNs a session of `place` must not be able to assume."""


class SharedRole:
    """One role for every workspace, narrowed to one bucket per session (AWS, MinIO)."""

    mode = "shared_role"

    def __init__(self, sts_client: Any, role_arn: str) -> None:
        self._sts = sts_client
        self.role_arn = role_arn

    async def provision(self, place: Place) -> None:
        return None

    async def bucket_made(self, bucket: str) -> None:
        return None

    async def retire(self, place: Place) -> None:
        return None

    async def assume(self, place: Place, duration_seconds: int) -> dict[str, Any]:
        sts = await self._sts()
        try:
            answer = await sts.assume_role(
                RoleArn=self.role_arn,
                RoleSessionName=place.name[:64],
                Policy=policy(place),
                DurationSeconds=duration_seconds,
            )
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            raise Unavailable(f"STS refused AssumeRole (HTTP {status}): {exc}") from exc
        credentials: dict[str, Any] = answer["Credentials"]
        return credentials

    def chain_targets(self, place: Place, other: Place) -> list[str]:
        return [self.role_arn]


class RolePerWorkspace:
    """A user and a role per workspace, through Ceph RGW's admin and IAM APIs."""

    mode = "role_per_workspace"

    def __init__(self, client: Any, http: SignedHttp, endpoints: Endpoints, service: Keys) -> None:
        self._client = client  # async (kind) -> the service's boto client of that kind
        self._http = http
        self._endpoints = endpoints
        self._service = service
        self._service_user: str | None = None
        self._keys: dict[str, Keys] = {}  # workspace user -> its keys, read once from RGW

    @staticmethod
    def role_arn(name: str) -> str:
        return f"arn:aws:iam:::role/{name}"

    async def _admin(self, method: str, **params: str) -> Answer:
        return await self._http.send(
            method, f"{self._endpoints.admin}/admin/user", "s3", self._service, query=params
        )

    async def provision(self, place: Place) -> None:
        # The user: may own no bucket (max-buckets -1), and gets no policy of its own, so its
        # keys can do nothing but assume the workspace's role. User and role take the
        # workspace's name (its bucket, or its prefix in a shared bucket).
        bucket = place.name
        answer = await self._admin(
            "PUT",
            uid=bucket,
            **{"display-name": f"workspace {bucket}", "max-buckets": "-1", "format": "json"},
        )
        if not answer.ok and error_code(answer.body) != "UserAlreadyExists" and answer.status != 409:
            raise Unavailable(f"RGW refused to create the workspace user {bucket}: HTTP {answer.status}")
        if answer.ok:
            self._remember(bucket, answer.body)
        iam = await self._client("iam")
        trust = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": [f"arn:aws:iam:::user/{bucket}"]},
                    "Action": ["sts:AssumeRole"],
                }
            ],
        }
        try:
            await iam.create_role(RoleName=bucket, Path="/", AssumeRolePolicyDocument=_compact(trust))
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") != 409:
                raise Unavailable(f"RGW refused to create the workspace role {bucket}: {exc}") from exc
        try:
            await iam.put_role_policy(RoleName=bucket, PolicyName="workspace", PolicyDocument=policy(place))
        except ClientError as exc:
            raise Unavailable(f"RGW refused the workspace role's policy for {bucket}: {exc}") from exc

    async def bucket_made(self, bucket: str) -> None:
        # Objects that a session writes belong to the workspace user, and RGW does not let even the
        # bucket's owner read them; this policy lets the service read and remove them. It names
        # the service alone: in a shared bucket it gives no workspace another's objects.
        service_user = await self._service_user_id()
        owner_access = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": [f"arn:aws:iam:::user/{service_user}"]},
                    "Action": ["s3:*"],
                    "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
                }
            ],
        }
        s3 = await self._client("s3")
        try:
            await s3.put_bucket_policy(Bucket=bucket, Policy=_compact(owner_access))
        except ClientError as exc:
            raise Unavailable(f"RGW refused the bucket policy of {bucket}: {exc}") from exc

    async def _service_user_id(self) -> str:
        if self._service_user is None:
            answer = await self._admin("GET", **{"access-key": self._service.access_key_id, "format": "json"})
            if not answer.ok:
                raise Unavailable(
                    f"RGW's admin API refused to name the service user (HTTP {answer.status}): it needs "
                    "the caps users=*, roles=* and buckets=* (docs/storage.md)"
                )
            self._service_user = str(json.loads(answer.body)["user_id"])
        return self._service_user

    def _remember(self, bucket: str, body: bytes) -> Keys:
        info = json.loads(body)
        for item in info.get("keys", []):
            if item.get("user") == bucket:
                keys = Keys(item["access_key"], item["secret_key"])
                self._keys[bucket] = keys
                return keys
        raise Unavailable(f"RGW holds no S3 keys for the workspace user {bucket}")

    async def _user_keys(self, bucket: str) -> Keys:
        if bucket in self._keys:
            return self._keys[bucket]
        answer = await self._admin("GET", uid=bucket, format="json")
        if not answer.ok:
            raise Unavailable(f"RGW does not know the workspace user {bucket}: HTTP {answer.status}")
        return self._remember(bucket, answer.body)

    async def retire(self, place: Place) -> None:
        # The role first: RGW checks on every request that a session's role still exists.
        bucket = place.name
        iam = await self._client("iam")
        for call, args in (
            (iam.delete_role_policy, {"RoleName": bucket, "PolicyName": "workspace"}),
            (iam.delete_role, {"RoleName": bucket}),
        ):
            try:
                await call(**args)
            except ClientError as exc:
                if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") != 404:
                    raise Unavailable(f"RGW refused to delete the workspace role {bucket}: {exc}") from exc
        answer = await self._admin("DELETE", uid=bucket, **{"purge-data": "false"})
        if not answer.ok and answer.status != 404:
            raise Unavailable(f"RGW refused to delete the workspace user {bucket}: HTTP {answer.status}")
        self._keys.pop(bucket, None)

    async def assume(self, place: Place, duration_seconds: int) -> dict[str, Any]:
        form = {
            "Action": "AssumeRole",
            "Version": "2011-06-15",
            "RoleArn": self.role_arn(place.name),
            "RoleSessionName": place.name[:64],
            "Policy": policy(place),
            "DurationSeconds": str(duration_seconds),
        }
        answer = await self._http.send(
            "POST", self._endpoints.sts, "sts", await self._user_keys(place.name), form=form
        )
        if not answer.ok:
            if answer.status == 403:  # keys rotated behind our back: read them again next time
                self._keys.pop(place.name, None)
            raise Unavailable(
                f"STS refused AssumeRole (HTTP {answer.status}): {error_code(answer.body) or 'no code'}"
            )
        return parse_assumed_credentials(answer.body)

    def chain_targets(self, place: Place, other: Place) -> list[str]:
        return [self.role_arn(other.name)]


async def probe_chaining(
    isolation: Isolation,
    http: SignedHttp,
    endpoints: Endpoints,
    create: Callable[[str], Awaitable[None]],
    delete: Callable[[str], Awaitable[None]],
    locate: Callable[[str], str],
    prefix: str,
    duration_seconds: int,
) -> list[str]:
    """Perform the escapes a consumer would try with one workspace's credentials, on two scratch
    workspaces placed as real ones are (`locate`: name -> location); return what succeeded
    (empty when the set-up holds)."""
    tag = secrets.token_hex(4)
    locations = [locate(f"{prefix}check-{tag}-a"), locate(f"{prefix}check-{tag}-b")]
    mine, other = Place.of(locations[0]), Place.of(locations[1])
    breaches: list[str] = []
    try:
        for location in locations:
            await create(location)
        issued = await isolation.assume(mine, duration_seconds)
        keys = Keys(issued["AccessKeyId"], issued["SecretAccessKey"], issued["SessionToken"])
        sts = endpoints.sts
        for arn in isolation.chain_targets(mine, other):
            form = {
                "Action": "AssumeRole",
                "Version": "2011-06-15",
                "RoleArn": arn,
                "RoleSessionName": "chain-check",
                "DurationSeconds": str(duration_seconds),
            }
            # Signed in headers as SDKs do, and in the query string: Ceph judges the two apart.
            for in_query in (False, True):
                answer = await http.send("POST", sts, "sts", keys, form=form, sign_in_query=in_query)
                if answer.ok:
                    breaches.append(f"AssumeRole on {arn} ({'query' if in_query else 'header'}-signed)")
        token = await http.send(
            "POST", sts, "sts", keys, form={"Action": "GetSessionToken", "Version": "2011-06-15"}
        )
        if token.ok:
            breaches.append("GetSessionToken")
        listing = await http.send("GET", f"{endpoints.s3}/", "s3", keys)
        if listing.ok:
            breaches.append("ListBuckets")
        made = await http.send("PUT", f"{endpoints.s3}/{prefix}check-{tag}-c", "s3", keys)
        if made.ok:
            breaches.append("CreateBucket")
            await delete(f"{prefix}check-{tag}-c")
        bucket_url = f"{endpoints.s3}/{other.bucket}"
        foreign = await http.send(
            "GET", bucket_url, "s3", keys, query={"list-type": "2", "prefix": other.prefix}
        )
        if foreign.ok:
            breaches.append("ListObjects of another workspace")
        written = await http.send("PUT", f"{bucket_url}/{other.prefix}check.txt", "s3", keys, form=b"x")
        if written.ok:
            breaches.append("PutObject into another workspace")
        if mine.shared:
            whole = await http.send(
                "GET", f"{endpoints.s3}/{mine.bucket}", "s3", keys, query={"list-type": "2"}
            )
            if whole.ok:
                breaches.append("ListObjects of the whole shared bucket")
            uploads = await http.send(
                "GET", f"{endpoints.s3}/{mine.bucket}", "s3", keys, query={"uploads": ""}
            )
            if uploads.ok:
                breaches.append("ListMultipartUploads of the whole shared bucket")
    finally:
        for location in locations:
            try:
                await delete(location)
            except Unavailable as exc:
                log.warning("could not remove the isolation check's workspace %s: %s", location, exc)
    return breaches
