"""Isolation on a real S3 server (Ceph radosgw): what a workspace's credentials, links and
tokens can reach, and that they stop working when they should; in both layouts, a bucket per
workspace and workspaces as prefixes of one shared bucket."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aioboto3
import aiohttp
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from provider.api.context import CONTEXT
from provider.app import create_app
from provider.backends.storage.s3_isolation import Place
from provider.config import Settings
from provider.domain.errors import Unavailable
from tests.conftest import ADMIN_KEY, REPO, WAIT_SECONDS, Api, place, poll_until, s3_settings

pytestmark = pytest.mark.s3
SHORT_SECONDS = 15  # the lifetime of the short credentials


def path(workspace: dict[str, Any], key: str) -> str:
    """The path of a workspace's object on the S3 server."""
    where = place(workspace)
    return f"/{where.bucket}/{where.prefix}{key}"


@pytest.fixture
async def s3_api(aiohttp_client, radosgw: str, tmp_path: Path, contract, layout: dict[str, Any]) -> Api:  # type: ignore[no-untyped-def]
    settings = Settings(
        data_dir=tmp_path / "data",
        auth={"bootstrap_admin_key": ADMIN_KEY, "key_cache_seconds": 0},
        assets={"directory": REPO / "config" / "assets"},
        storage=s3_settings(radosgw, s3={"sts": {"duration_seconds": 900}, **layout}),
    )
    client = await aiohttp_client(create_app(settings))
    return Api(client, contract, client.app)


async def consumer(api: Api, name: str) -> str:
    tenant = await api.json("POST", "/api/v1/tenants", 201, key=ADMIN_KEY, json={"participant_id": name})
    issued = await api.json("POST", f"/api/v1/tenants/{tenant['id']}/api-keys", 201, key=ADMIN_KEY, json={})
    return str(issued["key"])


def s3_client(creds: dict[str, Any]) -> Any:
    session = aioboto3.Session(
        aws_access_key_id=creds["access_key_id"],
        aws_secret_access_key=creds["secret_access_key"],
        aws_session_token=creds["session_token"],
        region_name=creds["region"],
    )
    config = Config(signature_version="s3v4", s3={"addressing_style": "path"}, retries={"max_attempts": 1})
    return session.client("s3", endpoint_url=creds["endpoint_url"], config=config)


async def denied(call: Any) -> int:
    with pytest.raises(ClientError) as caught:
        await call
    return int(caught.value.response["ResponseMetadata"]["HTTPStatusCode"])


@pytest.fixture
async def two_workspaces(s3_api: Api) -> AsyncIterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    key = await consumer(s3_api, "did:web:iso")
    a = await s3_api.json("POST", "/api/v1/workspaces", 201, key=key, json={"name": "a"})
    b = await s3_api.json("POST", "/api/v1/workspaces", 201, key=key, json={"name": "b"})
    await s3_api.json(
        "PUT", f"/api/v1/workspaces/{b['id']}/objects/secret.txt", 201, key=key, data=b"B's data"
    )
    yield key, a, b
    for ws in (a, b):
        await s3_api.request("DELETE", f"/api/v1/workspaces/{ws['id']}", key=key, check=False)


async def test_credentials_open_only_their_own_bucket(s3_api: Api, two_workspaces) -> None:  # type: ignore[no-untyped-def]
    key, a, b = two_workspaces
    creds = await s3_api.json("POST", f"/api/v1/workspaces/{a['id']}/credentials", 201, key=key)
    mine, theirs = place(a), place(b)
    assert (creds["bucket"], creds["prefix"]) == (mine.bucket, mine.prefix) and creds["session_token"]
    bucket_a, bucket_b, pa, pb = mine.bucket, theirs.bucket, mine.prefix, theirs.prefix
    async with s3_client(creds) as s3:
        # Everything works on A ...
        await s3.put_object(Bucket=bucket_a, Key=pa + "direct.bin", Body=b"written with STS credentials")
        listed = await s3.list_objects_v2(Bucket=bucket_a, Prefix=pa)
        assert [o["Key"] for o in listed["Contents"]] == [pa + "direct.bin"]
        got = await s3.get_object(Bucket=bucket_a, Key=pa + "direct.bin")
        assert await got["Body"].read() == b"written with STS credentials"
        upload = await s3.create_multipart_upload(Bucket=bucket_a, Key=pa + "mp.bin")
        await s3.abort_multipart_upload(Bucket=bucket_a, Key=pa + "mp.bin", UploadId=upload["UploadId"])
        # ... and nothing on B.
        assert await denied(s3.list_objects_v2(Bucket=bucket_b, Prefix=pb)) == 403
        assert await denied(s3.get_object(Bucket=bucket_b, Key=pb + "secret.txt")) == 403
        assert await denied(s3.head_object(Bucket=bucket_b, Key=pb + "secret.txt")) == 403
        assert await denied(s3.put_object(Bucket=bucket_b, Key=pb + "x", Body=b"x")) == 403
        assert await denied(s3.create_multipart_upload(Bucket=bucket_b, Key=pb + "x")) == 403
        assert await denied(s3.delete_object(Bucket=bucket_b, Key=pb + "secret.txt")) == 403
        copy = {"Bucket": bucket_b, "Key": pb + "secret.txt"}
        assert await denied(s3.copy_object(Bucket=bucket_a, Key=pa + "stolen", CopySource=copy)) == 403
        assert await denied(s3.create_bucket(Bucket=bucket_a + "-new")) == 403
        if mine.shared:
            # In the shared bucket: no listing beyond A's prefix (not the bucket, not a prefix
            # that A's is a part of, not the uploads that name B's keys), and no key outside it.
            assert bucket_a == bucket_b
            assert await denied(s3.list_objects_v2(Bucket=bucket_a)) == 403
            assert await denied(s3.list_objects_v2(Bucket=bucket_a, Prefix=pa[:-1])) == 403
            assert await denied(s3.list_objects(Bucket=bucket_a)) == 403
            assert await denied(s3.list_object_versions(Bucket=bucket_a)) == 403
            assert await denied(s3.list_multipart_uploads(Bucket=bucket_a)) == 403
            assert await denied(s3.put_object(Bucket=bucket_a, Key="outside", Body=b"x")) == 403
            assert await denied(s3.get_bucket_policy(Bucket=bucket_a)) == 403
            # A literal "../" is part of the key, not a way up: it stays under A's prefix.
            dotted = await s3.list_objects_v2(Bucket=bucket_a, Prefix=f"{pa}../{pb}")
            assert dotted.get("Contents", []) == []
    # A direct write shows up in the service once usage is recounted, and through the API.
    refreshed = await s3_api.json("GET", f"/api/v1/workspaces/{a['id']}?refresh_usage=true", 200, key=key)
    assert refreshed["usage"]["objects"] == 1
    response = await s3_api.request("GET", f"/api/v1/workspaces/{a['id']}/objects/direct.bin", key=key)
    assert await response.read() == b"written with STS credentials"


async def test_expired_credentials_are_refused(
    radosgw: str, aiohttp_client, tmp_path: Path, contract
) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(
        data_dir=tmp_path / "data",
        auth={"bootstrap_admin_key": ADMIN_KEY, "key_cache_seconds": 0},
        assets={"directory": tmp_path},
        storage=s3_settings(radosgw, s3={"sts": {"duration_seconds": 60}}),
    )
    client = await aiohttp_client(create_app(settings))
    api = Api(client, contract, client.app)
    key = await consumer(api, "did:web:expiry")
    ws = await api.json("POST", "/api/v1/workspaces", 201, key=key, json={})
    # Shorter than the API gives (Ceph's floor for this test cluster is 5 s), asked of the backend
    # directly; long enough that their first use comes well within it on a loaded machine.
    from provider.api.context import CONTEXT

    storage = client.app[CONTEXT].workspaces.storage
    short = await storage.temporary_credentials(ws["storage"]["location"], SHORT_SECONDS)
    creds = {
        "access_key_id": short.access_key_id,
        "secret_access_key": short.secret_access_key,
        "session_token": short.session_token,
        "endpoint_url": short.endpoint_url,
        "region": short.region,
    }
    async with s3_client(creds) as s3:
        await s3.put_object(Bucket=short.bucket, Key="k", Body=b"v")

        async def refused() -> int | None:
            try:
                response = await s3.get_object(Bucket=short.bucket, Key="k")
                await response["Body"].read()
            except ClientError as exc:
                return int(exc.response["ResponseMetadata"]["HTTPStatusCode"])
            return None

        # radosgw decides when they expire: its answer is awaited, not its clock predicted.
        status = await poll_until(refused, "the credentials refused", SHORT_SECONDS + WAIT_SECONDS, every=0.5)
        assert status in (400, 403)
    await api.json("DELETE", f"/api/v1/workspaces/{ws['id']}", 204, key=key)


async def test_presigned_links_reach_one_object_and_expire(s3_api: Api, two_workspaces) -> None:  # type: ignore[no-untyped-def]
    key, a, b = two_workspaces
    data = os.urandom(1000)
    await s3_api.json("PUT", f"/api/v1/workspaces/{a['id']}/objects/shared.bin", 201, key=key, data=data)
    link = await s3_api.json(
        "POST", f"/api/v1/workspaces/{a['id']}/links", 201, key=key, json={"key": "shared.bin"}
    )
    assert path(a, "shared.bin") in link["url"]
    async with aiohttp.ClientSession() as session:
        async with session.get(link["url"]) as response:
            assert response.status == 200 and await response.read() == data
        for tampered in (
            link["url"].replace(path(a, "shared.bin"), path(b, "secret.txt")),
            link["url"].replace(path(a, ""), path(b, "")),
            link["url"].replace("shared.bin", "other.bin"),
        ):
            async with session.get(tampered) as response:
                assert response.status == 403, tampered
        # The same link for one second: radosgw refuses it once that has passed by its clock.
        short = await s3_api.json(
            "POST",
            f"/api/v1/workspaces/{a['id']}/links",
            201,
            key=key,
            json={"key": "shared.bin", "expires_seconds": 1},
        )
        assert "X-Amz-Expires=1&" in short["url"] + "&"

        async def refused() -> bool:
            async with session.get(short["url"]) as response:
                return response.status == 403

        await poll_until(refused, "the expired link refused", every=0.5)
        async with session.get(link["url"]) as response:  # only its lifetime ended it
            assert response.status == 200 and await response.read() == data
    upload = await s3_api.json(
        "POST", f"/api/v1/workspaces/{a['id']}/links", 201, key=key, json={"key": "up.bin", "method": "PUT"}
    )
    async with aiohttp.ClientSession() as session, session.put(upload["url"], data=b"uploaded") as response:
        assert response.status == 200
    got = await s3_api.request("GET", f"/api/v1/workspaces/{a['id']}/objects/up.bin", key=key)
    assert await got.read() == b"uploaded"


async def test_tokens_reach_only_their_workspace_on_s3(s3_api: Api, two_workspaces) -> None:  # type: ignore[no-untyped-def]
    key, a, b = two_workspaces
    token = (await s3_api.json("POST", f"/api/v1/workspaces/{a['id']}/tokens", 201, key=key, json={}))[
        "token"
    ]
    await s3_api.json("GET", f"/api/v1/workspaces/{b['id']}/objects/secret.txt", 404, key=token)
    await s3_api.json("GET", f"/api/v1/workspaces/{b['id']}/objects", 404, key=token)
    await s3_api.json("PUT", f"/api/v1/workspaces/{b['id']}/objects/x", 404, key=token, data=b"x")
    await s3_api.json("POST", f"/api/v1/workspaces/{b['id']}/credentials", 404, key=token)
    creds = await s3_api.json("POST", f"/api/v1/workspaces/{a['id']}/credentials", 201, key=token)
    assert (creds["bucket"], creds["prefix"]) == (place(a).bucket, place(a).prefix)


async def test_objects_api_on_s3_streams_large_objects_and_deletes_the_bucket(s3_api: Api) -> None:
    key = await consumer(s3_api, "did:web:big")
    ws = await s3_api.json("POST", "/api/v1/workspaces", 201, key=key, json={})
    url = f"/api/v1/workspaces/{ws['id']}/objects/big.bin"
    data = os.urandom(12 * 1024 * 1024 + 5)
    await s3_api.json("PUT", url, 201, key=key, data=data)
    response = await s3_api.request("GET", url, key=key)
    assert response.status == 200 and await response.read() == data
    partial = await s3_api.request("GET", url, key=key, headers={"Range": "bytes=5000000-5000099"})
    assert partial.status == 206 and await partial.read() == data[5000000:5000100]
    cached = await s3_api.request("GET", url, key=key, headers={"If-None-Match": response.headers["ETag"]})
    assert cached.status == 304
    await s3_api.json("DELETE", f"/api/v1/workspaces/{ws['id']}", 204, key=key)
    from provider.api.context import CONTEXT

    s3 = await s3_api.app[CONTEXT].workspaces.storage._client("s3")
    buckets = [b["Name"] for b in (await s3.list_buckets())["Buckets"]]
    where = place(ws)
    if where.shared:  # the shared bucket stays, with nothing of the workspace in it
        assert where.bucket in buckets
        assert (await s3.list_objects_v2(Bucket=where.bucket, Prefix=where.prefix)).get("Contents", []) == []
    else:
        assert where.bucket not in buckets


async def test_an_execution_on_s3_storage_stages_with_temporary_credentials(
    radosgw: str,
    tmp_path: Path,
    contract,  # type: ignore[no-untyped-def]
    layout: dict[str, Any],
) -> None:
    """The sidecar's S3 path: it gets the workspace's temporary credentials (never the
    service's), stages the input from the bucket (or its prefix of the shared one) and ships the
    output back, byte for byte."""
    from tests.conftest import live_api

    settings = Settings(
        data_dir=tmp_path / "data",
        auth={"bootstrap_admin_key": ADMIN_KEY, "key_cache_seconds": 0},
        assets={"directory": REPO / "config" / "assets"},
        storage=s3_settings(radosgw, s3=layout),
    )
    api, close = await live_api(settings, contract)
    try:
        key = await consumer(api, "did:web:s3-runner")
        ws = await api.json("POST", "/api/v1/workspaces", 201, key=key, json={})
        data = os.urandom(300_000)
        await api.json("PUT", f"/api/v1/workspaces/{ws['id']}/objects/in.bin", 201, key=key, data=data)
        execution = await api.json(
            "POST",
            "/api/v1/executions",
            201,
            key=key,
            json={
                "asset_id": "dummy",
                "workspace_id": ws["id"],
                "inputs": {"source": "in.bin"},
                "env": {"SLEEP_SECONDS": "0"},
            },
        )

        async def ended() -> dict[str, Any] | None:
            current = await api.json("GET", f"/api/v1/executions/{execution['id']}", 200, key=key)
            return (
                dict(current) if current["state"] in ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR") else None
            )

        execution = await poll_until(ended, "the execution ended")
        assert execution["state"] == "COMPLETE", execution
        outputs = await api.json("GET", f"/api/v1/executions/{execution['id']}/outputs", 200, key=key)
        [output] = outputs["outputs"]
        assert output["presigned"] is True
        async with aiohttp.ClientSession() as session, session.get(output["download_url"]) as response:
            assert response.status == 200 and await response.read() == data
        await api.json("DELETE", f"/api/v1/workspaces/{ws['id']}", 204, key=key)
    finally:
        await close()


async def test_a_workspace_that_could_not_be_made_leaves_no_bucket_or_role(s3_api: Api, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The bucket and the credentials' user and role are made side by side: when one side fails,
    the other's work is removed, so that failed creations (a retrying connector) pile up nothing.
    (In the shared layout the failure comes once the user and role are made.)"""
    storage = s3_api.app[CONTEXT].workspaces.storage
    assert storage.isolation is not None
    s3, iam = await storage._client("s3"), await storage._client("iam")

    async def made() -> set[str]:
        """This test's buckets and roles (other tests make theirs at the same time)."""
        buckets = {b["Name"] for b in (await s3.list_buckets())["Buckets"]}
        names = buckets | {r["RoleName"] for r in (await iam.list_roles())["Roles"]}
        return {name for name in names if name.startswith(storage.options.bucket_prefix)}

    async def refused(bucket: str) -> None:
        raise Unavailable("RGW refused the bucket policy (injected)")

    key = await consumer(s3_api, "did:web:half-made")
    await s3_api.json(
        "POST", "/api/v1/workspaces", 201, key=key, json={"name": "first"}
    )  # shared bucket made
    before = await made()
    if storage.options.layout == "shared_buckets":
        provision = storage.isolation.provision

        async def refused_late(where: Place) -> None:
            await provision(where)
            raise Unavailable("RGW refused the role's policy (injected)")

        monkeypatch.setattr(storage.isolation, "provision", refused_late)
    else:
        monkeypatch.setattr(storage.isolation, "bucket_made", refused)
    failed = await s3_api.request("POST", "/api/v1/workspaces", key=key, json={"name": "x"})
    assert failed.status == 503
    assert await made() == before  # neither the bucket nor the role of the failed workspace
    listed = (await s3_api.json("GET", "/api/v1/workspaces", 200, key=key))["items"]
    assert [ws["name"] for ws in listed] == ["first"]
