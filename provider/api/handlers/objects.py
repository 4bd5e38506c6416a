"""The objects API: streamed uploads and downloads of a workspace's objects."""

from __future__ import annotations

import base64
import binascii
import mimetypes
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import unquote_to_bytes

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from pydantic import Field

from provider.api.bodies import body_chunks
from provider.api.context import ctx
from provider.api.parsing import PageQuery, parse_json, parse_query
from provider.api.problems import ProblemError
from provider.api.routing import Access, Route, principal
from provider.api.schemas import Body, object_out, page_out, timestamp
from provider.domain.errors import FieldProblem, InvalidKey
from provider.domain.json_values import JsonInt
from provider.domain.ranges import ByteRange, resolve_range
from provider.domain.workspaces import Scope

RECEIVE_CHUNK = 256 * 1024


class ListQuery(PageQuery):
    prefix: str = Field(default="", max_length=1024)


def _digest(request: web.Request, header: str, size: int) -> bytes | None:
    """A checksum header as bytes: base64 (as S3 sends it) or, for SHA-256, hex too."""
    value = request.headers.get(header)
    if value is None:
        return None
    value = value.strip()
    try:
        if len(value) == size * 2:
            return bytes.fromhex(value)
        raw = base64.b64decode(value, validate=True)
    except (ValueError, binascii.Error):
        raw = b""
    if len(raw) != size:
        raise ProblemError(
            400,
            "invalid-header",
            f"{header} must be the base64 (or hex) digest of the body",
            [FieldProblem(f"header.{header}", f"expected {size} bytes, base64 or hex encoded")],
        )
    return raw


def _key(request: web.Request) -> str:
    """The object key as the client spelled it, percent-decoded as strict UTF-8.

    aiohttp leaves percent-encoded bytes that are not UTF-8 as literal text (`%FF` stays "%FF"),
    which would make `…/objects/%FF` and `…/objects/%25FF` one object: such keys are refused.
    """
    raw = request.rel_url.raw_path.split("/", _KEY_SEGMENT)[_KEY_SEGMENT]
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeError:  # not UTF-8 once decoded, or raw bytes that were not (surrogates)
        raise InvalidKey(
            "invalid object key: its percent-encoded bytes are not UTF-8",
            [FieldProblem("path.key", "must be UTF-8 once percent-decoded")],
        ) from None


async def put_object(request: web.Request) -> web.Response:
    md5 = _digest(request, "Content-MD5", 16)
    sha256 = _digest(request, "x-checksum-sha256", 32)
    stored = await ctx(request).workspaces.put_object(
        principal(request),
        request.match_info["workspace_id"],
        _key(request),
        body_chunks(request, RECEIVE_CHUNK),
        declared_size=request.content_length,
        md5=md5,
        sha256=sha256,
    )
    return web.json_response(
        object_out(stored.info, stored.sha256),
        status=201 if stored.replaced_size is None else 200,
        headers={"ETag": stored.info.etag},
    )


class _LocalFile(web.FileResponse):
    """A file sent with sendfile, for the byte range this service resolved (None: all of it).

    aiohttp's own Range handling answers 416 with an empty body for headers that RFC 9110 says
    to ignore, so the file is prepared for a copy of the request whose Range is the resolved one.
    """

    def __init__(self, path: Path, byte_range: ByteRange | None, headers: dict[str, str]) -> None:
        super().__init__(path, chunk_size=RECEIVE_CHUNK, headers=headers)
        self._byte_range = byte_range

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        headers = request.headers.copy()
        headers.popall("Range", None)
        if self._byte_range is not None:
            headers["Range"] = f"bytes={self._byte_range.start}-{self._byte_range.end}"
        return await super().prepare(request.clone(headers=headers))


async def get_object(request: web.Request) -> web.StreamResponse:
    context, caller = ctx(request), principal(request)
    workspace_id, key = request.match_info["workspace_id"], _key(request)
    info = await context.workspaces.head_object(caller, workspace_id, key)
    # Range is defined for GET only: HEAD ignores it (RFC 9110 section 14.2).
    ranges = ",".join(request.headers.getall("Range", [])) if request.method == "GET" else None
    byte_range = resolve_range(ranges, info.size)  # 416 in our problem shape
    local = await context.workspaces.local_object_path(caller, workspace_id, key)
    if local is not None:
        # Plain files go out with sendfile; FileResponse handles ETag, If-None-Match and HEAD.
        return _LocalFile(local, byte_range, {"Content-Type": _content_type(key)})
    headers = {
        "ETag": info.etag,
        "Last-Modified": info.last_modified.strftime("%a, %d %b %Y %H:%M:%S GMT"),
        "Accept-Ranges": "bytes",
        "Content-Type": _content_type(key),
    }
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match and info.etag in [tag.strip() for tag in if_none_match.split(",")]:
        return web.Response(status=304, headers={"ETag": info.etag})
    if request.method == "HEAD":
        return web.Response(status=200, headers={**headers, "Content-Length": str(info.size)})
    stream = await context.workspaces.open_object(caller, workspace_id, key, byte_range)
    response = web.StreamResponse(status=206 if byte_range else 200, headers=headers)
    if byte_range:
        response.headers["Content-Range"] = byte_range.content_range(stream.info.size)
    response.content_length = byte_range.length if byte_range else stream.info.size
    try:
        await response.prepare(request)
        async for chunk in stream.chunks:
            await response.write(chunk)
        await response.write_eof()
    finally:
        await stream.aclose()
    return response


def _content_type(key: str) -> str:
    return mimetypes.guess_type(key)[0] or "application/octet-stream"


async def delete_object(request: web.Request) -> web.Response:
    await ctx(request).workspaces.delete_object(
        principal(request), request.match_info["workspace_id"], _key(request)
    )
    return web.Response(status=204)


async def list_objects(request: web.Request) -> web.Response:
    query = parse_query(request, ListQuery)
    page = await ctx(request).workspaces.list_objects(
        principal(request), request.match_info["workspace_id"], query.prefix, query.page()
    )
    return web.json_response(page_out([object_out(o) for o in page.items], page.next_token))


class LinkCreate(Body):
    key: str
    method: Literal["GET", "PUT"] = "GET"
    expires_seconds: Annotated[JsonInt, Field(ge=1)] | None = None


async def create_link(request: web.Request) -> web.Response:
    body = await parse_json(request, LinkCreate)
    url, expires_at = await ctx(request).workspaces.link(
        principal(request), request.match_info["workspace_id"], body.key, body.method, body.expires_seconds
    )
    return web.json_response(
        {"url": url, "method": body.method, "key": body.key, "expires_at": timestamp(expires_at)},
        status=201,
        headers={"Cache-Control": "no-store"},
    )


OBJECTS = "/api/v1/workspaces/{workspace_id}/objects"
OBJECT = OBJECTS + "/{key:.+}"
_KEY_SEGMENT = OBJECT.count("/")  # the key is the rest of the path after this many slashes
ROUTES = [
    Route("GET", OBJECTS, list_objects, Access.AUTHENTICATED, Scope.OBJECTS_READ),
    Route("PUT", OBJECT, put_object, Access.AUTHENTICATED, Scope.OBJECTS_WRITE),
    Route("GET", OBJECT, get_object, Access.AUTHENTICATED, Scope.OBJECTS_READ),
    Route("HEAD", OBJECT, get_object, Access.AUTHENTICATED, Scope.OBJECTS_READ),
    Route("DELETE", OBJECT, delete_object, Access.AUTHENTICATED, Scope.OBJECTS_WRITE),
    Route(
        "POST",
        "/api/v1/workspaces/{workspace_id}/links",
        create_link,
        Access.AUTHENTICATED,
        Scope.OBJECTS_READ,
    ),
]
