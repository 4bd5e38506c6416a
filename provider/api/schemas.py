"""Request bodies and response representations of the HTTP API (see contracts/openapi.yaml)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from provider.domain.assets import ASSET_ID_PATTERN, Asset, AssetSpec
from provider.domain.representations import timestamp as timestamp
from provider.domain.tenants import ApiKey, Principal, Role, Tenant


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


AssetIds = Annotated[list[Annotated[str, Field(pattern=ASSET_ID_PATTERN)]], Field(max_length=1000)]


class TenantCreate(Body):
    participant_id: Annotated[str, Field(min_length=1, max_length=512)]
    display_name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    allowed_assets: AssetIds | None = None


class TenantUpdate(Body):
    allowed_assets: AssetIds | None


def id_set(values: list[str] | None) -> frozenset[str] | None:
    return None if values is None else frozenset(values)


def id_list(values: frozenset[str] | None) -> list[str] | None:
    return None if values is None else sorted(values)


class ApiKeyCreate(Body):
    role: Role = Role.CONSUMER
    name: Annotated[str, Field(max_length=200)] = ""
    expires_at: AwareDatetime | None = None


class AssetPut(AssetSpec):
    """The asset spec; `id` and `version` may repeat the path's (as in asset files) but must match."""

    id: str | None = None
    version: str | None = None


def tenant_out(tenant: Tenant) -> dict[str, Any]:
    return {
        "id": tenant.id,
        "participant_id": tenant.participant_id,
        "display_name": tenant.display_name,
        "allowed_assets": id_list(tenant.allowed_assets),
        "created_at": timestamp(tenant.created_at),
    }


def api_key_out(key: ApiKey, secret: str | None = None) -> dict[str, Any]:
    out = {
        "id": key.id,
        "tenant_id": key.tenant_id,
        "role": key.role.value,
        "name": key.name,
        "prefix": key.prefix,
        "created_at": timestamp(key.created_at),
        "expires_at": timestamp(key.expires_at),
        "revoked_at": timestamp(key.revoked_at),
    }
    if secret is not None:
        out["key"] = secret
    return out


def asset_out(asset: Asset) -> dict[str, Any]:
    out = asset.model_dump(mode="json")
    out["created_at"] = timestamp(asset.created_at)
    out["updated_at"] = timestamp(asset.updated_at)
    return out


def principal_out(principal: Principal, tenant: Tenant) -> dict[str, Any]:
    return {
        "tenant": tenant_out(tenant),
        "role": principal.role.value,
        "credential": {"kind": principal.kind.value, "id": principal.credential_id},
        "workspace_id": principal.workspace_id,
        "scopes": sorted(principal.scopes),
    }


def page_out(items: list[dict[str, Any]], next_token: str | None) -> dict[str, Any]:
    return {"items": items, "next_page_token": next_token}
