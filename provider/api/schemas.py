"""Request bodies of the HTTP API, the page envelope, and the representations of the storage
port's values (see contracts/openapi.yaml); every resource the domain models is represented in
provider/domain/representations.py."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field

from provider.domain.assets import ASSET_ID_PATTERN, AssetSpec
from provider.domain.representations import timestamp as timestamp
from provider.domain.tenants import Role
from provider.services.ports import ObjectInfo, TemporaryCredentials


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# RFC 3339 date-time (the contract's `format: date-time`), with its offset: pydantic alone would
# also take numbers ("0.5", 1700000000) as seconds since 1970.
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})", re.ASCII)


def _rfc3339(value: object) -> object:
    if isinstance(value, str) and _RFC3339.fullmatch(value):
        return value
    raise ValueError("must be an RFC 3339 date-time with an offset, such as 2030-01-01T00:00:00Z")


DateTime = Annotated[AwareDatetime, BeforeValidator(_rfc3339)]


# Label keys (workspaces, executions, subscription filters): 1-63 characters, letters and digits
# at both ends, `_ . - /` inside, as contracts/openapi.yaml states (Labels).
LABEL_KEY = re.compile(r"[A-Za-z0-9]([A-Za-z0-9_.\-/]{0,61}[A-Za-z0-9])?")


def _label_keys(value: dict[str, str]) -> dict[str, str]:
    bad = [k for k in value if not LABEL_KEY.fullmatch(k)]
    if bad:
        raise ValueError(f"invalid label keys: {', '.join(sorted(bad))}")
    return value


Labels = Annotated[
    dict[str, Annotated[str, Field(max_length=256)]], Field(max_length=32), AfterValidator(_label_keys)
]


AssetIds = Annotated[list[Annotated[str, Field(pattern=ASSET_ID_PATTERN)]], Field(max_length=1000)]


class TenantCreate(Body):
    participant_id: Annotated[str, Field(min_length=1, max_length=512)]
    display_name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    allowed_assets: AssetIds | None = None


class TenantUpdate(Body):
    allowed_assets: AssetIds | None


def id_set(values: list[str] | None) -> frozenset[str] | None:
    return None if values is None else frozenset(values)


class ApiKeyCreate(Body):
    role: Role = Role.CONSUMER
    name: Annotated[str, Field(max_length=200)] = ""
    expires_at: DateTime | None = None


class AssetPut(AssetSpec):
    """The asset spec; `id` and `version` may repeat the path's (as in asset files) but must match."""

    id: str | None = None
    version: str | None = None


def object_out(info: ObjectInfo, sha256: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "key": info.key,
        "size": info.size,
        "etag": info.etag,
        "last_modified": timestamp(info.last_modified),
    }
    if sha256 is not None:
        out["sha256"] = sha256
    return out


def credentials_out(creds: TemporaryCredentials) -> dict[str, Any]:
    return {
        "access_key_id": creds.access_key_id,
        "secret_access_key": creds.secret_access_key,
        "session_token": creds.session_token,
        "expiration": timestamp(creds.expiration),
        "endpoint_url": creds.endpoint_url,
        "bucket": creds.bucket,
        "prefix": creds.prefix,
        "region": creds.region,
    }


def page_out(items: list[dict[str, Any]], next_token: str | None) -> dict[str, Any]:
    return {"items": items, "next_page_token": next_token}
