"""Signed requests that boto's clients do not make for us: Ceph RGW's admin API (per-workspace
users), STS AssumeRole as a workspace user (whose keys change per call, so no long-lived client),
and the start-up probes that sign requests the way an attacker would (SigV4 in the query string).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
from botocore.auth import S3SigV4Auth, SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials


@dataclass(frozen=True)
class Keys:
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None

    def botocore(self) -> Credentials:
        return Credentials(self.access_key_id, self.secret_access_key, self.session_token)


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class SignedHttp:
    """One aiohttp session for every hand-signed request to the S3 server."""

    def __init__(self, region: str, timeout_seconds: float = 30.0) -> None:
        self.region = region
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None

    async def send(
        self,
        method: str,
        url: str,
        service: str,
        keys: Keys,
        *,
        query: dict[str, str] | None = None,
        form: dict[str, str] | bytes | None = None,
        sign_in_query: bool = False,
    ) -> Answer:
        """Sign with SigV4 (in headers, or in the query string as a presigned request) and send
        `form` as a urlencoded body (a dict) or as it is (bytes)."""
        if query:
            url = f"{url}?{urlencode(query, quote_via=quote)}"
        request = AWSRequest(method=method, url=url, data=form or b"")
        if sign_in_query:
            SigV4QueryAuth(keys.botocore(), service, self.region, expires=300).add_auth(request)
        elif service == "s3":
            S3SigV4Auth(keys.botocore(), service, self.region).add_auth(request)
        else:
            SigV4Auth(keys.botocore(), service, self.region).add_auth(request)
        prepared = request.prepare()
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        async with self._session.request(
            method, prepared.url, data=prepared.body, headers=dict(prepared.headers)
        ) as response:
            return Answer(response.status, await response.read())

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _find(root: ET.Element, name: str) -> str | None:
    """The text of the first element called `name`, whatever its XML namespace."""
    for element in root.iter():
        if element.tag == name or element.tag.endswith("}" + name):
            return element.text
    return None


def parse_assumed_credentials(body: bytes) -> dict[str, Any]:
    """AccessKeyId, SecretAccessKey, SessionToken and Expiration from an AssumeRole answer."""
    root = ET.fromstring(body)  # noqa: S314 - the operator's own S3 server
    values = {name: _find(root, name) for name in ("AccessKeyId", "SecretAccessKey", "SessionToken")}
    expiration = _find(root, "Expiration")
    if not all(values.values()) or not expiration:
        raise ValueError("the STS answer holds no credentials")
    return {**values, "Expiration": parse_time(expiration)}


def parse_time(text: str) -> datetime:
    """An ISO 8601 UTC time; Ceph gives nanoseconds, which Python does not take, so cut to micro."""
    head, dot, fraction = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(head + (dot + fraction[:6] if dot else "")).replace(tzinfo=UTC)


def error_code(body: bytes) -> str:
    """The <Code> of an S3, IAM or STS error answer, or an empty string."""
    try:
        root = ET.fromstring(body)  # noqa: S314 - the operator's own S3 server
    except ET.ParseError:
        return ""
    return _find(root, "Code") or ""
