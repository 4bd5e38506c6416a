"""Workspaces, objects and tokens through the HTTP API (filesystem storage)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from yarl import URL

from provider.api.context import CONTEXT
from provider.app import create_app
from provider.config import Settings
from provider.domain.tokens import WorkspaceToken
from provider.domain.workspaces import Scope
from tests.conftest import ADMIN_KEY, Api, Consumer, poll_until, s3_settings


@pytest.fixture
async def alice(new_consumer) -> Consumer:  # type: ignore[no-untyped-def]
    return await new_consumer("did:web:alice")


async def workspace(api: Api, key: str, **body: Any) -> dict[str, Any]:
    return await api.json("POST", "/api/v1/workspaces", 201, key=key, json=body)


async def test_workspace_life_cycle(api: Api, alice: Consumer, settings: Settings) -> None:
    ws = await workspace(api, alice.key, name="study", labels={"project": "x"})
    assert ws["tenant_id"] == alice.tenant_id and ws["state"] == "active"
    assert ws["quota"] == {
        "bytes": settings.workspaces.quota_bytes,
        "objects": settings.workspaces.quota_objects,
    }
    assert ws["usage"]["bytes"] == 0 and ws["storage"]["backend"] == "fs"
    directory = settings.data_dir / "workspaces" / ws["storage"]["location"]
    assert directory.is_dir()
    listed = await api.json("GET", "/api/v1/workspaces", 200, key=alice.key)
    assert [w["id"] for w in listed["items"]] == [ws["id"]]
    await api.json("PUT", f"/api/v1/workspaces/{ws['id']}/objects/a.txt", 201, key=alice.key, data=b"abc")
    got = await api.json("GET", f"/api/v1/workspaces/{ws['id']}", 200, key=alice.key)
    assert got["usage"]["bytes"] == 3 and got["usage"]["objects"] == 1
    await api.json("DELETE", f"/api/v1/workspaces/{ws['id']}", 204, key=alice.key)
    await api.json("GET", f"/api/v1/workspaces/{ws['id']}", 404, key=alice.key)
    assert not directory.exists()
    assert (await api.json("GET", "/api/v1/workspaces", 200, key=alice.key))["items"] == []


async def test_admin_creates_workspaces_for_a_tenant_and_consumers_only_for_themselves(
    api: Api,
    alice: Consumer,
    new_consumer,  # type: ignore[no-untyped-def]
) -> None:
    ws = await workspace(api, ADMIN_KEY, tenant_id=alice.tenant_id)
    assert ws["tenant_id"] == alice.tenant_id
    await api.json("GET", f"/api/v1/workspaces/{ws['id']}", 200, key=alice.key)
    bob = await new_consumer()
    problem = await api.json(
        "POST", "/api/v1/workspaces", 422, key=bob.key, json={"tenant_id": alice.tenant_id}
    )
    assert problem["errors"][0]["field"] == "body.tenant_id"
    await api.json("POST", "/api/v1/workspaces", 404, key=ADMIN_KEY, json={"tenant_id": "ten_nobody"})


async def test_objects_round_trip_binary_with_range_etag_and_listing(api: Api, alice: Consumer) -> None:
    ws = await workspace(api, alice.key)
    base = f"/api/v1/workspaces/{ws['id']}/objects"
    data = os.urandom(300_000)
    created = await api.json("PUT", base + "/in/data.bin", 201, key=alice.key, data=data)
    assert created["size"] == len(data) and created["sha256"] == hashlib.sha256(data).hexdigest()
    response = await api.request("GET", base + "/in/data.bin", key=alice.key)
    assert response.status == 200 and await response.read() == data
    etag = response.headers["ETag"]
    assert etag == created["etag"]
    partial = await api.request(
        "GET", base + "/in/data.bin", key=alice.key, headers={"Range": "bytes=100-199"}
    )
    assert partial.status == 206 and await partial.read() == data[100:200]
    assert partial.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    suffix = await api.request("GET", base + "/in/data.bin", key=alice.key, headers={"Range": "bytes=-10"})
    assert await suffix.read() == data[-10:]
    cached = await api.request("GET", base + "/in/data.bin", key=alice.key, headers={"If-None-Match": etag})
    assert cached.status == 304
    head = await api.request("HEAD", base + "/in/data.bin", key=alice.key)
    assert head.status == 200 and int(head.headers["Content-Length"]) == len(data)
    await api.json("PUT", base + "/in/other.txt", 201, key=alice.key, data=b"x")
    await api.json("PUT", base + "/out.txt", 201, key=alice.key, data=b"y")
    replaced = await api.json("PUT", base + "/out.txt", 200, key=alice.key, data=b"yy")
    assert replaced["size"] == 2
    page = await api.json("GET", base + "?prefix=in/&page_size=1", 200, key=alice.key)
    assert [o["key"] for o in page["items"]] == ["in/data.bin"]
    rest = await api.json(
        "GET", f"{base}?prefix=in/&page_token={page['next_page_token']}", 200, key=alice.key
    )
    assert [o["key"] for o in rest["items"]] == ["in/other.txt"] and rest["next_page_token"] is None
    await api.json("DELETE", base + "/in/other.txt", 204, key=alice.key)
    await api.json("DELETE", base + "/in/other.txt", 404, key=alice.key)
    await api.json("GET", base + "/in/other.txt", 404, key=alice.key)
    usage = (await api.json("GET", f"/api/v1/workspaces/{ws['id']}", 200, key=alice.key))["usage"]
    assert usage["bytes"] == len(data) + 2 and usage["objects"] == 2


async def test_unsatisfiable_range_is_416(api: Api, alice: Consumer) -> None:
    ws = await workspace(api, alice.key)
    url = f"/api/v1/workspaces/{ws['id']}/objects/k"
    await api.json("PUT", url, 201, key=alice.key, data=b"0123456789")
    response = await api.request("GET", url, key=alice.key, headers={"Range": "bytes=50-60"})
    assert response.status == 416 and response.headers["Content-Range"] == "bytes */10"


async def test_chunked_upload_and_checksums(api: Api, alice: Consumer) -> None:
    ws = await workspace(api, alice.key)
    url = f"/api/v1/workspaces/{ws['id']}/objects/chunked.bin"
    data = os.urandom(200_000)

    async def chunks():  # type: ignore[no-untyped-def]
        for start in range(0, len(data), 7000):
            yield data[start : start + 7000]

    md5 = base64.b64encode(hashlib.md5(data).digest()).decode()  # noqa: S324
    sha = hashlib.sha256(data).hexdigest()
    stored = await api.json(
        "PUT", url, 201, key=alice.key, data=chunks(), headers={"Content-MD5": md5, "x-checksum-sha256": sha}
    )
    assert stored["sha256"] == sha
    assert await (await api.request("GET", url, key=alice.key)).read() == data


@pytest.mark.parametrize("header", ["Content-MD5", "x-checksum-sha256"])
async def test_wrong_checksum_is_400_and_stores_nothing(api: Api, alice: Consumer, header: str) -> None:
    ws = await workspace(api, alice.key)
    url = f"/api/v1/workspaces/{ws['id']}/objects/bad.bin"
    digest = hashlib.md5(b"other").digest() if header == "Content-MD5" else hashlib.sha256(b"other").digest()  # noqa: S324
    problem = await api.json(
        "PUT", url, 400, key=alice.key, data=b"payload", headers={header: base64.b64encode(digest).decode()}
    )
    assert problem["type"] == "urn:provider:problem:checksum-mismatch"
    await api.json("GET", url, 404, key=alice.key)
    malformed = await api.json("PUT", url, 400, key=alice.key, data=b"payload", headers={header: "nonsense"})
    assert malformed["errors"][0]["field"] == f"header.{header}"
    usage = (await api.json("GET", f"/api/v1/workspaces/{ws['id']}", 200, key=alice.key))["usage"]
    assert usage == {**usage, "bytes": 0, "objects": 0}


@pytest.mark.parametrize(
    "key",
    ["../escape", "a/../../b", "a/./b", "a//b", "trail/", "nul\x01x", "x" * 1025],
)
async def test_invalid_keys_are_400_and_write_nothing(
    api: Api, alice: Consumer, key: str, settings: Settings
) -> None:
    ws = await workspace(api, alice.key)
    # Sent exactly as written: a client library would normalise the dot segments away.
    path = f"/api/v1/workspaces/{ws['id']}/objects/{quote(key, safe='/.')}"
    url = URL(str(api.client.make_url("/")).rstrip("/") + path, encoded=True)
    async with api.client.session.put(
        url, data=b"data", headers={"Authorization": f"Bearer {alice.key}"}
    ) as response:
        assert response.status == 400, await response.text()
        problem = await response.json()
        assert (
            problem["type"] == "urn:provider:problem:invalid-key"
            and problem["errors"][0]["field"] == "path.key"
        )
    root = settings.data_dir / "workspaces"
    files = [p for p in root.rglob("*") if p.is_file()]
    assert files == []


async def test_byte_quota_is_413_naming_the_limit(
    api: Api, alice: Consumer, aiohttp_client, settings: Settings
) -> None:  # type: ignore[no-untyped-def]
    small = settings.model_copy(
        update={
            # A service of its own beside `api`'s: data of its own too (one service per database).
            "data_dir": settings.data_dir.with_name("small"),
            "workspaces": settings.workspaces.model_copy(update={"quota_bytes": 1000, "quota_objects": 3}),
        }
    )
    client = await aiohttp_client(create_app(small))
    quota_api = Api(client, api.contract, client.app)
    consumer_key = await _consumer_key(quota_api)
    ws = await workspace(quota_api, consumer_key)
    base = f"/api/v1/workspaces/{ws['id']}/objects"
    problem = await quota_api.json("PUT", base + "/big", 413, key=consumer_key, data=os.urandom(1001))
    assert "1000" in problem["detail"] and problem["type"] == "urn:provider:problem:quota-exceeded"

    async def chunked():  # type: ignore[no-untyped-def]
        for _ in range(20):
            yield b"x" * 100

    problem = await quota_api.json("PUT", base + "/streamed", 413, key=consumer_key, data=chunked())
    assert "1000" in problem["detail"]
    await quota_api.json("GET", base + "/streamed", 404, key=consumer_key)
    for i in range(3):
        await quota_api.json("PUT", f"{base}/o{i}", 201, key=consumer_key, data=b"1")
    problem = await quota_api.json("PUT", base + "/o4", 413, key=consumer_key, data=b"1")
    assert "3 objects" in problem["detail"]
    await quota_api.json("PUT", base + "/o0", 200, key=consumer_key, data=b"22")  # replacing is fine


async def _consumer_key(api: Api) -> str:
    tenant = await api.json("POST", "/api/v1/tenants", 201, key=ADMIN_KEY, json={"participant_id": "q"})
    issued = await api.json("POST", f"/api/v1/tenants/{tenant['id']}/api-keys", 201, key=ADMIN_KEY, json={})
    return str(issued["key"])


async def test_interrupted_upload_leaves_no_object(api: Api, alice: Consumer, settings: Settings) -> None:
    ws = await workspace(api, alice.key)
    path = f"/api/v1/workspaces/{ws['id']}/objects/partial.bin"
    _reader, writer = await asyncio.open_connection(api.client.host, api.client.port)
    writer.write(
        (
            f"PUT {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {alice.key}\r\n"
            "Content-Length: 100000\r\nContent-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + b"x" * 40000
    )
    await writer.drain()
    uploads = settings.data_dir / "workspaces" / ws["storage"]["location"] / "uploads"
    await poll_until(lambda: list(uploads.iterdir()), "the upload under way")
    writer.close()
    # The partial upload is discarded when the server sees the connection end: only then could
    # a wrongly kept object have appeared.
    await poll_until(lambda: not list(uploads.iterdir()), "the partial upload discarded")
    await api.json("GET", path, 404, key=alice.key)
    listing = await api.json("GET", f"/api/v1/workspaces/{ws['id']}/objects", 200, key=alice.key)
    assert listing["items"] == []


async def test_tokens_open_one_workspace_within_their_scopes(api: Api, alice: Consumer) -> None:
    a, b = await workspace(api, alice.key), await workspace(api, alice.key)
    read = await api.json(
        "POST",
        f"/api/v1/workspaces/{a['id']}/tokens",
        201,
        key=alice.key,
        json={"scopes": ["objects:read"], "ttl_seconds": 600, "name": "reader"},
    )
    assert read["scopes"] == ["objects:read"] and read["token"].count(".") == 2
    full = await api.json("POST", f"/api/v1/workspaces/{a['id']}/tokens", 201, key=alice.key, json={})
    assert set(full["scopes"]) == {s.value for s in Scope}
    await api.json("PUT", f"/api/v1/workspaces/{a['id']}/objects/x", 201, key=full["token"], data=b"by token")
    await api.json("PUT", f"/api/v1/workspaces/{b['id']}/objects/x", 201, key=alice.key, data=b"other")
    assert (
        await (await api.request("GET", f"/api/v1/workspaces/{a['id']}/objects/x", key=read["token"])).read()
        == b"by token"
    )
    await api.json("PUT", f"/api/v1/workspaces/{a['id']}/objects/y", 403, key=read["token"], data=b"no")
    await api.json("GET", f"/api/v1/workspaces/{b['id']}/objects/x", 404, key=full["token"])
    await api.json("GET", f"/api/v1/workspaces/{b['id']}", 404, key=full["token"])
    mine = await api.json("GET", "/api/v1/workspaces", 200, key=read["token"])
    assert [w["id"] for w in mine["items"]] == [a["id"]]
    me = await api.json("GET", "/api/v1/me", 200, key=read["token"])
    assert me["workspace_id"] == a["id"] and me["scopes"] == ["objects:read"]
    await api.json("POST", f"/api/v1/workspaces/{a['id']}/tokens", 403, key=full["token"], json={})
    await api.json("DELETE", f"/api/v1/workspaces/{a['id']}", 403, key=full["token"])
    tokens = await api.json("GET", f"/api/v1/workspaces/{a['id']}/tokens", 200, key=alice.key)
    assert {t["id"] for t in tokens["items"]} == {read["id"], full["id"]}
    assert all("token" not in t for t in tokens["items"])


async def test_revoked_and_expired_tokens_are_401(api: Api, alice: Consumer) -> None:
    ws = await workspace(api, alice.key)
    issued = await api.json("POST", f"/api/v1/workspaces/{ws['id']}/tokens", 201, key=alice.key, json={})
    url = f"/api/v1/workspaces/{ws['id']}/objects"
    await api.json("GET", url, 200, key=issued["token"])
    await api.json("DELETE", f"/api/v1/workspaces/{ws['id']}/tokens/{issued['id']}", 204, key=alice.key)
    await api.json("GET", url, 401, key=issued["token"])
    # A token whose expiry has passed, correctly signed by the service's own key.
    codec = api.app[CONTEXT].workspaces.codec
    past = datetime.now(UTC) - timedelta(minutes=5)
    expired = codec.encode(
        WorkspaceToken(
            "tok_old", ws["id"], alice.tenant_id, frozenset(Scope), "", past - timedelta(hours=1), past
        )
    )
    problem = await api.json("GET", url, 401, key=expired)
    assert "expired" in problem["detail"]


async def test_deleting_a_workspace_revokes_its_tokens(api: Api, alice: Consumer) -> None:
    ws = await workspace(api, alice.key)
    issued = await api.json("POST", f"/api/v1/workspaces/{ws['id']}/tokens", 201, key=alice.key, json={})
    await api.json("GET", f"/api/v1/workspaces/{ws['id']}", 200, key=issued["token"])
    await api.json("DELETE", f"/api/v1/workspaces/{ws['id']}", 204, key=alice.key)
    await api.json("GET", f"/api/v1/workspaces/{ws['id']}", 401, key=issued["token"])


async def test_token_ttl_limit_and_credentials_unsupported_on_fs(
    api: Api, alice: Consumer, settings: Settings
) -> None:
    ws = await workspace(api, alice.key)
    problem = await api.json(
        "POST",
        f"/api/v1/workspaces/{ws['id']}/tokens",
        422,
        key=alice.key,
        json={"ttl_seconds": settings.tokens.max_ttl_seconds + 1},
    )
    assert problem["errors"][0]["field"] == "body.ttl_seconds"
    problem = await api.json("POST", f"/api/v1/workspaces/{ws['id']}/credentials", 501, key=alice.key)
    assert "s3" in problem["detail"]


async def test_integers_in_bodies_are_json_integers(api: Api, alice: Consumer) -> None:
    """A lax integer would take "3600" and true (as 1): JSON Schema's integer takes neither, but
    takes 3600.0."""
    ws = await workspace(api, alice.key)
    tokens = f"/api/v1/workspaces/{ws['id']}/tokens"
    for ttl in ("3600", True):
        problem = await api.json("POST", tokens, 422, key=alice.key, json={"ttl_seconds": ttl})
        assert problem["errors"][0]["field"] == "body.ttl_seconds", problem
    await api.json("POST", tokens, 201, key=alice.key, json={"ttl_seconds": 3600.0})
    links = f"/api/v1/workspaces/{ws['id']}/links"
    problem = await api.json("POST", links, 422, key=alice.key, json={"key": "k", "expires_seconds": True})
    assert problem["errors"][0]["field"] == "body.expires_seconds", problem


async def test_interrupted_deletion_finishes_at_next_start(
    settings: Settings, aiohttp_client, contract
) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(create_app(settings))
    api = Api(client, contract, client.app)
    key = await _consumer_key(api)
    ws = await workspace(api, key)
    await api.json("PUT", f"/api/v1/workspaces/{ws['id']}/objects/k", 201, key=key, data=b"v")
    service = client.app[CONTEXT].workspaces

    async def crash(workspace_id: str) -> None:
        raise RuntimeError("power cut")

    service.before_delete.append(crash)
    with pytest.raises(RuntimeError):
        await service.delete(await api_principal(api, key), ws["id"])
    await client.close()
    directory = Path(settings.data_dir) / "workspaces" / ws["storage"]["location"]
    assert directory.exists()
    again = await aiohttp_client(create_app(settings))  # start-up finishes the deletion
    assert not directory.exists()
    await Api(again, contract, again.app).json("GET", f"/api/v1/workspaces/{ws['id']}", 404, key=key)


async def api_principal(api: Api, key: str):  # type: ignore[no-untyped-def]
    return await api.app[CONTEXT].auth.authenticate(f"Bearer {key}")


# --- the same answers on both storage backends -----------------------------------------------


@pytest.fixture(params=["fs", pytest.param("s3", marks=pytest.mark.s3)])
async def backend_api(
    request: pytest.FixtureRequest, aiohttp_client: Any, settings: Settings, contract: Any
) -> Api:
    """The API over the filesystem or S3 (a real Ceph radosgw)."""
    if request.param == "s3":
        storage = s3_settings(request.getfixturevalue("radosgw"))
        settings = settings.model_copy(update={"storage": settings.storage.model_validate(storage)})
    app = create_app(settings)
    return Api(await aiohttp_client(app), contract, app)


async def _consumer_workspace(api: Api) -> tuple[str, str]:
    tenant = await api.json(
        "POST", "/api/v1/tenants", 201, key=ADMIN_KEY, json={"participant_id": "did:web:carol"}
    )
    issued = await api.json("POST", f"/api/v1/tenants/{tenant['id']}/api-keys", 201, key=ADMIN_KEY, json={})
    ws = await workspace(api, issued["key"])
    return issued["key"], ws["id"]


LONGEST_SEGMENT = "é" * 127 + "x"  # 255 bytes of UTF-8
LONG_SEGMENTS = ["x" * 256, "é" * 128, "dir/" + "x" * 256 + "/file", "x" * 256 + "/file"]


async def test_keys_with_segments_up_to_255_bytes_work_and_longer_ones_are_400_everywhere(
    backend_api: Api,
) -> None:
    api = backend_api
    key, ws = await _consumer_workspace(api)
    base = f"/api/v1/workspaces/{ws}"
    longest = f"dir/{LONGEST_SEGMENT}/{LONGEST_SEGMENT}"
    await api.json("PUT", f"{base}/objects/{quote(longest)}", 201, key=key, data=b"fits")
    assert await (await api.request("GET", f"{base}/objects/{quote(longest)}", key=key)).read() == b"fits"
    listed = await api.json("GET", f"{base}/objects", 200, key=key)
    assert [o["key"] for o in listed["items"]] == [longest]
    for long_key in LONG_SEGMENTS:
        url = f"{base}/objects/{quote(long_key)}"
        for method in ("PUT", "GET", "HEAD", "DELETE"):
            response = await api.request(method, url, key=key, data=b"data" if method == "PUT" else None)
            assert response.status == 400, f"{method} {long_key[:20]}: {response.status}"
            if method != "HEAD":
                problem = await response.json(content_type="application/problem+json")
                assert problem["type"] == "urn:provider:problem:invalid-key"
                assert "255 bytes" in problem["errors"][0]["message"]
        bodies: list[tuple[str, dict[str, Any], str]] = [
            ("imports", {"source_url": "https://example.com/x", "target_key": long_key}, "body.target_key"),
            ("links", {"key": long_key}, "body.key"),
            ("edc-transfers", {"transfer_process_id": "tp", "target_key": long_key}, "body.target_key"),
        ]
        for path, body, field in bodies:
            problem = await api.json("POST", f"{base}/{path}", 400, key=key, json=body)
            assert problem["type"] == "urn:provider:problem:invalid-key", problem
            assert problem["errors"][0]["field"] == field
        problem = await api.json(
            "POST",
            "/api/v1/executions",
            422,
            key=key,
            json={"asset_id": "dummy", "workspace_id": ws, "inputs": {"source": long_key}},
        )
        assert "255 bytes" in problem["errors"][0]["message"], problem
        assert problem["errors"][0]["field"] == "body.inputs.source"
    assert (await api.json("GET", f"{base}/imports", 200, key=key))["items"] == []
    listed = await api.json("GET", f"{base}/objects", 200, key=key)
    assert [o["key"] for o in listed["items"]] == [longest]


async def test_percent_encoded_bytes_that_are_not_utf8_are_refused_not_stored_as_text(
    backend_api: Api,
) -> None:
    api = backend_api
    key, ws = await _consumer_workspace(api)
    base = str(api.client.make_url(f"/api/v1/workspaces/{ws}/objects/")).rstrip("/")
    headers = {"Authorization": f"Bearer {key}"}
    # Stored under its literal text, %FF%FE would be the same object as %25FF%25FE.
    await api.json("PUT", f"/api/v1/workspaces/{ws}/objects/%25FF%25FE", 201, key=key, data=b"literal")
    for raw in ("%FF%FE", "dir/%FF", "%C3%28", "%ED%A0%80"):  # not UTF-8; a lone surrogate
        for method in ("PUT", "GET", "DELETE"):
            async with api.client.session.request(
                method, URL(f"{base}/{raw}", encoded=True), data=b"other", headers=headers
            ) as response:
                assert response.status == 400, f"{method} {raw}: {response.status}"
                problem = await response.json(content_type="application/problem+json")
                assert problem["type"] == "urn:provider:problem:invalid-key"
                assert problem["errors"][0]["field"] == "path.key"
    listed = await api.json("GET", f"/api/v1/workspaces/{ws}/objects", 200, key=key)
    assert [o["key"] for o in listed["items"]] == ["%FF%FE"]
    got = await api.request("GET", f"/api/v1/workspaces/{ws}/objects/%25FF%25FE", key=key)
    assert await got.read() == b"literal"
    # Percent-encoded UTF-8 is one key however it is spelled.
    await api.json("PUT", f"/api/v1/workspaces/{ws}/objects/caf%C3%A9", 201, key=key, data=b"cafe")
    same = await api.request("GET", f"/api/v1/workspaces/{ws}/objects/café", key=key)
    assert await same.read() == b"cafe"


HUGE = "9" * 5000  # past Python's 4300-digit limit for int()
OBJECT = b"0123456789"
# Range header -> (status, body, Content-Range) for a 10-byte object, per RFC 9110 section 14:
# a syntactically invalid header is ignored (200, the whole object), several ranges are answered
# with the whole object, and an unsatisfiable range is 416 with `bytes */10`.
RANGES: list[tuple[str, int, bytes, str | None]] = [
    ("bytes=0-4", 206, b"01234", "bytes 0-4/10"),
    ("bytes=5-", 206, b"56789", "bytes 5-9/10"),
    ("bytes=-3", 206, b"789", "bytes 7-9/10"),
    ("bytes=8-100", 206, b"89", "bytes 8-9/10"),
    ("bytes=9-9", 206, b"9", "bytes 9-9/10"),
    ("Bytes=0-0", 206, b"0", "bytes 0-0/10"),  # the unit is case-insensitive
    ("bytes=0000000000000000000000003-4", 206, b"34", "bytes 3-4/10"),
    (f"bytes=0-{HUGE}", 206, OBJECT, "bytes 0-9/10"),
    (f"bytes=-{HUGE}", 206, OBJECT, "bytes 0-9/10"),
    (f"bytes={HUGE}-", 416, b"", "bytes */10"),
    ("bytes=10-", 416, b"", "bytes */10"),
    ("bytes=50-60", 416, b"", "bytes */10"),
    ("bytes=-0", 416, b"", "bytes */10"),
    ("bytes=50-60, 70-", 416, b"", "bytes */10"),
    ("bytes=0-1,5-6", 200, OBJECT, None),
    ("bytes=0-1, 50-60", 200, OBJECT, None),
    ("bytes=5-2", 200, OBJECT, None),
    (f"bytes={HUGE}-2", 200, OBJECT, None),
    ("bytes=", 200, OBJECT, None),
    ("bytes=-", 200, OBJECT, None),
    ("bytes=abc", 200, OBJECT, None),
    ("bytes=1-2-3", 200, OBJECT, None),
    ("bytes=0-1,", 200, OBJECT, None),
    ("bytes = 0-1", 200, OBJECT, None),
    ("bytes=+1-2", 200, OBJECT, None),
    ("bytes=0x1-2", 200, OBJECT, None),
    ("items=0-1", 200, OBJECT, None),
    ("0-1", 200, OBJECT, None),
]


async def test_range_headers_get_the_same_answer_on_both_backends(backend_api: Api) -> None:
    api = backend_api
    key, ws = await _consumer_workspace(api)
    url = f"/api/v1/workspaces/{ws}/objects/digits.txt"
    await api.json("PUT", url, 201, key=key, data=OBJECT)
    for header, status, body, content_range in RANGES:
        response = await api.request("GET", url, key=key, headers={"Range": header})
        where = f"Range: {header[:30]}"
        assert response.status == status, f"{where}: {response.status}"
        assert response.headers.get("Content-Range") == content_range, where
        if status == 416:
            problem = await response.json(content_type="application/problem+json")
            assert problem["type"] == "urn:provider:problem:range-not-satisfiable"
        else:
            assert await response.read() == body, where
        # Range is defined for GET only: HEAD ignores it (RFC 9110 section 14.2).
        head = await api.request("HEAD", url, key=key, headers={"Range": header})
        assert head.status == 200 and head.headers["Content-Length"] == "10", where
        assert "Content-Range" not in head.headers, where
