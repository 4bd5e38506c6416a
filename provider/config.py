"""Configuration: one YAML file plus `PROVIDER_...` environment overrides (nested with `__`).

Precedence, highest first: environment, YAML file, defaults. The defaults are the embedded
set-up (SQLite under the data directory); every key is documented in
config/provider.example.yaml.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Any, Literal, get_args, get_origin
from urllib.parse import unquote, urlsplit

import yaml
from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    YamlConfigSettingsSource,
)

DEFAULT_CONFIG_PATH = Path("config/provider.yaml")
ENV_CONFIG_PATH = "PROVIDER_CONFIG"
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
HOST_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")


def _check_networks(value: list[str]) -> list[str]:
    for item in value:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError as exc:
            raise ValueError(f"{item!r} is not a network such as 10.0.0.0/8 or 127.0.0.1/32") from exc
    return value


# Every secret value that this repository's examples show (deploy/, docker-compose.yml, config/,
# docs/, README.md) or once showed: anyone may read them, so a copy left unchanged is refused.
# tests/attacks/test_placeholder_secrets.py finds the shipped ones and checks that each is here.
PLACEHOLDER_SECRETS = (
    "REPLACE-ME",
    "REPLACE-ME-with-32-or-more-random-characters",
    "local-admin-key-change-me-0123456789abcdef",
    "provider-s3-secret-change-me",
    "minio-root-password",
    "provider",
    "password",
    "pk....",
    "<code>",
    "<32+ characters>",
    "<32+ random characters>",
    "<the same 32+ random characters as in the endpoint>",
    "<the connector's management API key (x-api-key)>",
    "<the connector's management API key, sent as x-api-key on callbacks>",
)
_PLACEHOLDERS = frozenset(value.lower() for value in PLACEHOLDER_SECRETS)
MIN_SECRET_LENGTH = 32
_MIN_DISTINCT_CHARACTERS = 8


def is_placeholder(value: str) -> bool:
    return value.strip().lower() in _PLACEHOLDERS


def _check_host_names(value: list[str]) -> list[str]:
    for item in value:
        try:
            ipaddress.ip_address(item)
        except ValueError:
            pass
        else:
            raise ValueError(f"{item!r} is an address: put its network in callback_networks")
        if not HOST_NAME.fullmatch(item):
            raise ValueError(f"{item!r} is not a host name such as edc-controlplane or edc.example.org")
    return [item.lower().rstrip(".") for item in value]


def _not_placeholder(value: SecretStr | None) -> SecretStr | None:
    """Credentials of other systems: their length is theirs to decide, but not an example's value."""
    if value is not None and is_placeholder(value.get_secret_value()):
        raise ValueError("is a placeholder from the provider's examples: set the real value")
    return value


def _strong_secret(value: SecretStr | None) -> SecretStr | None:
    """Secrets that guard this service: long, not an example's value, not one character repeated."""
    if value is None:
        return None
    text = value.get_secret_value()
    if is_placeholder(text):
        raise ValueError(
            "is a placeholder from the provider's examples: choose a random value of at least "
            f"{MIN_SECRET_LENGTH} characters (e.g. openssl rand -hex 32)"
        )
    if len(text) < MIN_SECRET_LENGTH:
        raise ValueError(f"must be at least {MIN_SECRET_LENGTH} characters long")
    if len(set(text)) < _MIN_DISTINCT_CHARACTERS:
        raise ValueError(f"must be random: it has fewer than {_MIN_DISTINCT_CHARACTERS} different characters")
    return value


def _http_url(value: str | None) -> str | None:
    """An endpoint such as http://minio:9000 or https://s3.example.org; typos fail at start-up."""
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an http:// or https:// URL with a host")
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError as exc:
        raise ValueError(f"{value!r} has an invalid port") from exc
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    public_url: AnyHttpUrl | None = Field(
        default=None, description="URL under which clients reach the service; defaults to http://host:port"
    )
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024, description="limit for JSON request bodies")
    shutdown_timeout_seconds: float = Field(default=10.0, gt=0)
    header_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="a connection that has not sent a request's complete headers this long after it "
        "opened or after its previous response is closed (idle keep-alive connections too)",
    )
    body_idle_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description="longest pause within a request body; then 408 and the connection closes",
    )
    max_connections: int = Field(
        default=1024, ge=1, description="open connections per replica; more are accepted and closed at once"
    )
    tls_cert_file: Path | None = Field(
        default=None, description="PEM certificate chain: serve HTTPS (unset: plain HTTP, as behind a proxy)"
    )
    tls_key_file: Path | None = Field(default=None, description="PEM private key of tls_cert_file")

    @model_validator(mode="after")
    def _tls_pair(self) -> ServerSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        for path in (self.tls_cert_file, self.tls_key_file):
            if path is not None and not path.is_file():
                raise ValueError(f"{path} is not a file")
        return self


class StoreSettings(_Section):
    url: str | None = Field(
        default=None,
        description="sqlite+aiosqlite:///PATH or postgresql+asyncpg://USER@HOST/DB (default: SQLite)",
    )
    migrate_on_start: bool = True
    pool_size: int = Field(default=10, ge=1, le=200)
    echo: bool = False

    @field_validator("url")
    @classmethod
    def _driver(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
        password = urlsplit(value).password if value is not None else None
        if password is not None and is_placeholder(unquote(password)):
            raise ValueError("the password is a placeholder from the provider's examples: set the real one")
        return value


class AuthSettings(_Section):
    bootstrap_admin_key: SecretStr | None = Field(
        default=None, description="an admin API key the operator chooses (at least 32 characters)"
    )
    operator_participant_id: str = Field(default="operator", min_length=1)
    operator_display_name: str = "Operator"
    key_cache_seconds: float = Field(default=5.0, ge=0, le=300)

    _strong = field_validator("bootstrap_admin_key")(_strong_secret)


class AssetSettings(_Section):
    directory: Path = Field(
        default=Path("config/assets"), description="YAML asset definitions loaded at start"
    )


class FsStorageSettings(_Section):
    root: Path | None = Field(default=None, description="default: <data_dir>/workspaces")


class StsSettings(_Section):
    role_arn: str | None = Field(
        default=None, description="role assumed for temporary credentials (arn:aws:iam::ACCOUNT:role/NAME)"
    )
    endpoint_url: str | None = Field(default=None, description="STS endpoint; default: the S3 endpoint")
    duration_seconds: int = Field(default=3600, ge=60, le=43200)
    mode: Literal["shared_role", "role_per_workspace"] = Field(
        default="shared_role",
        description=(
            "shared_role (AWS, MinIO): role_arn narrowed by a session policy; role_per_workspace "
            "(Ceph RGW): a user and a role per workspace, made through RGW's admin API"
        ),
    )
    admin_endpoint_url: str | None = Field(
        default=None, description="RGW's admin and IAM APIs (role_per_workspace); default: the S3 endpoint"
    )
    _urls = field_validator("endpoint_url", "admin_endpoint_url")(_http_url)
    check_on_start: bool = Field(
        default=True,
        description="try escaping a scratch workspace's credentials at start-up; refuse to start on success",
    )
    allow_role_chaining: bool = Field(
        default=False,
        description="start although the check found an escape (logged as CRITICAL at every start)",
    )


class S3StorageSettings(_Section):
    endpoint_url: str | None = Field(default=None, description="e.g. http://minio:9000; None for AWS")
    public_endpoint_url: str | None = Field(
        default=None, description="the S3 endpoint as consumers reach it; default: endpoint_url"
    )
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    _real_secret = field_validator("secret_access_key")(_not_placeholder)
    bucket_prefix: str = Field(
        default="provider-",
        pattern=r"^[a-z0-9][a-z0-9.-]{0,29}$",
        description="workspace buckets are PREFIX+id",
    )
    layout: Literal["bucket_per_workspace", "shared_buckets"] = Field(
        default="bucket_per_workspace",
        description=(
            "bucket_per_workspace: a bucket each (bounded by the server's bucket quota); "
            "shared_buckets: a prefix each in one of `shared_buckets` buckets PREFIX+shared-N"
        ),
    )
    shared_buckets: int = Field(
        default=8, ge=1, le=1000, description="how many shared buckets (layout shared_buckets)"
    )
    addressing_style: Literal["path", "virtual", "auto"] = "path"
    _urls = field_validator("endpoint_url", "public_endpoint_url")(_http_url)
    part_size_bytes: int = Field(default=8 * 1024 * 1024, ge=5 * 1024 * 1024, le=512 * 1024 * 1024)
    parts_in_flight: int = Field(default=2, ge=1, le=16)
    sts: StsSettings = Field(default_factory=StsSettings)


class StorageSettings(_Section):
    backend: Literal["fs", "s3"] = "fs"
    fs: FsStorageSettings = Field(default_factory=FsStorageSettings)
    s3: S3StorageSettings = Field(default_factory=S3StorageSettings)
    presign_seconds: int = Field(
        default=900, ge=1, le=7 * 24 * 3600, description="lifetime of download links"
    )


class WorkspaceSettings(_Section):
    quota_bytes: int = Field(default=10 * 1024**3, ge=0, description="default byte quota of a new workspace")
    quota_objects: int = Field(default=100_000, ge=0, description="default object quota of a new workspace")


class SigningKey(_Section):
    kid: str = Field(min_length=1, max_length=64)
    algorithm: Literal["HS256", "RS256"] = "HS256"
    secret: SecretStr | None = Field(default=None, description="HS256: at least 32 characters")
    private_key_file: Path | None = Field(default=None, description="RS256: PEM private key (signing)")
    public_key_file: Path | None = Field(default=None, description="RS256: PEM public key (verification)")

    _strong = field_validator("secret")(_strong_secret)

    @model_validator(mode="after")
    def _material(self) -> SigningKey:
        if self.algorithm == "HS256":
            if self.secret is None:
                raise ValueError("HS256 keys need a secret of at least 32 characters")
        elif self.public_key_file is None:
            raise ValueError("RS256 keys need public_key_file (and private_key_file to sign)")
        return self


class TokenSettings(_Section):
    signing_keys: list[SigningKey] = Field(
        default_factory=list,
        description="the first key signs, all verify (rotation); empty: an HS256 secret kept in data_dir",
    )
    audience: str = "provider"
    default_ttl_seconds: int = Field(default=24 * 3600, ge=60)
    max_ttl_seconds: int = Field(default=30 * 24 * 3600, ge=60)


class ImportSettings(_Section):
    allowed_networks: list[str] = Field(
        default_factory=list,
        description="CIDRs imports may reach although they are loopback, private or link-local",
    )
    allowed_schemes: list[Literal["http", "https"]] = Field(default_factory=lambda: ["http", "https"])  # type: ignore[arg-type]
    max_concurrent: int = Field(default=4, ge=1, le=256)
    max_attempts: int = Field(default=5, ge=1, le=100)
    backoff_seconds: float = Field(default=1.0, gt=0, description="first retry delay; doubles, with jitter")
    connect_timeout_seconds: float = Field(default=10.0, gt=0)
    read_timeout_seconds: float = Field(default=60.0, gt=0, description="longest silence from the source")

    _networks = field_validator("allowed_networks")(_check_networks)


class LocalComputeSettings(_Section):
    root: Path | None = Field(default=None, description="working directories; default <data_dir>/executions")
    max_concurrent: int = Field(
        default=4, ge=1, le=1024, description="executions running at once; more wait QUEUED"
    )
    cancel_grace_seconds: float = Field(default=10.0, ge=0, description="SIGTERM, then SIGKILL after this")
    niceness: int = Field(
        default=10, ge=0, le=19, description="CPU priority of job processes (nice); 0: unchanged"
    )


class KubernetesComputeSettings(_Section):
    namespace: str = Field(default="default", description="where Jobs, their Secrets and the Lease live")
    kubeconfig: Path | None = Field(
        default=None, description="kubeconfig file; default: in-cluster configuration, else ~/.kube/config"
    )
    context: str | None = Field(default=None, description="kubeconfig context; default: the current one")
    sidecar_image: str = Field(
        default="ghcr.io/provider/provider-sidecar:0.1.0", description="image of stage-in and stage-out"
    )
    image_pull_secrets: list[str] = Field(default_factory=list)
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    service_account: str | None = Field(
        default=None, description="service account of job pods (its token is never mounted)"
    )
    runtime_class: str | None = Field(default=None, description="runtimeClassName of job pods (e.g. gvisor)")
    gpu_resource: str = Field(default="nvidia.com/gpu", description="extended resource requested per GPU")
    gpu_type_label: str = Field(
        default="nvidia.com/gpu.product", description="node label matched against an asset's gpu_type"
    )
    scratch: Literal["emptyDir", "ephemeral"] = Field(
        default="emptyDir", description="the volume holding inputs and results; ephemeral: a PVC per job"
    )
    scratch_storage_class: str | None = Field(default=None, description="storage class of ephemeral volumes")
    ttl_seconds_after_finished: int = Field(
        default=3600, ge=0, description="finished Jobs are removed after this (logs are kept before)"
    )
    staging_seconds: int = Field(
        default=600, ge=0, description="added to an asset's max_run_seconds for stage-in and stage-out"
    )
    image_pull_grace_seconds: float = Field(
        default=120.0, ge=0, description="how long an image may fail to pull before SYSTEM_ERROR"
    )
    pod_create_grace_seconds: float = Field(
        default=300.0,
        ge=0,
        description="how long the cluster may refuse a Job's pod (quota, admission) before SYSTEM_ERROR",
    )
    lease_name: str = Field(default="provider-leader", pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    lease_seconds: float = Field(
        default=15.0, ge=2, description="leadership lapses this long after a renewal"
    )
    renew_seconds: float = Field(default=5.0, gt=0, description="the leader renews its Lease this often")
    identity: str | None = Field(
        default=None, description="this replica's name in the Lease; default: hostname"
    )
    watch_timeout_seconds: int = Field(default=300, ge=5, le=3600)
    reconcile_seconds: float = Field(
        default=60.0, ge=1, description="how often Jobs and executions are compared"
    )
    request_timeout_seconds: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _renew_inside_lease(self) -> KubernetesComputeSettings:
        if self.renew_seconds >= self.lease_seconds:
            raise ValueError("renew_seconds must be shorter than lease_seconds")
        return self


class ComputeSettings(_Section):
    backend: Literal["local", "kubernetes"] = "local"
    api_url: str | None = Field(
        default=None,
        description="how job sidecars reach this service (filesystem storage); default: public URL",
    )
    per_tenant_max_concurrent: int = Field(default=0, ge=0, description="0: no per-tenant limit")
    local: LocalComputeSettings = Field(default_factory=LocalComputeSettings)
    kubernetes: KubernetesComputeSettings = Field(default_factory=KubernetesComputeSettings)


class RetrySettings(_Section):
    max_attempts: int = Field(
        default=3,
        ge=1,
        le=20,
        description="attempts per execution for system errors that are not the consumer's (1: no retries); "
        "an asset's retry.max_attempts may lower it",
    )
    backoff_seconds: float = Field(default=5.0, gt=0, description="first retry delay; doubles, with jitter")
    max_backoff_seconds: float = Field(default=300.0, gt=0)


class ExecutionSettings(_Section):
    credential_margin_seconds: int = Field(
        default=900, ge=60, description="job credentials outlive the asset's maximum run time by this much"
    )
    max_wait_seconds: float = Field(default=60.0, gt=0, le=300, description="longest long-poll")
    retry: RetrySettings = Field(default_factory=RetrySettings)
    cache_seconds: float = Field(
        default=1.0,
        ge=0,
        le=60,
        description="reads served from memory; other replicas' changes show after this",
    )


class _CallbackDestinations(_Section):
    """Where the service's own requests to a connector or control plane may go (the SSRF guard)."""

    callback_hosts: list[str] = Field(
        default_factory=list,
        description="host names callbacks may go to (addresses they resolve to that are private "
        "need callback_networks too)",
    )
    callback_networks: list[str] = Field(
        default_factory=list,
        description="CIDRs callbacks may reach under any name, private ones included; with "
        "callback_hosts empty too, callbacks are refused",
    )

    _hosts = field_validator("callback_hosts")(_check_host_names)
    _callback_networks = field_validator("callback_networks")(_check_networks)


class EdcConnectorSettings(_CallbackDestinations):
    secret: SecretStr = Field(
        description="the secret path segment of this connector's webhook URLs (32+ characters)"
    )
    management_api_key: SecretStr | None = Field(
        default=None, description="sent as x-api-key on provisioning callbacks to this connector"
    )
    allowed_networks: list[str] = Field(
        default_factory=list, description="source networks allowed to call the webhooks; empty: any"
    )
    dataplane_assets: list[str] = Field(
        default_factory=list,
        description="catalog asset ids that workspaces of this connector's data-plane provisioner may run",
    )

    _strong = field_validator("secret")(_strong_secret)
    _real_key = field_validator("management_api_key")(_not_placeholder)
    _networks = field_validator("allowed_networks")(_check_networks)


class EdcEventSettings(_Section):
    auth_key: str = Field(
        default="X-Api-Key", description="header the connector's event callback sends (its authKey)"
    )
    auth_code: SecretStr | None = Field(
        default=None,
        description="the header's value (the secret behind its authCodeId, 32+ characters); "
        "unset: events are off",
    )
    participants: list[str] = Field(
        default_factory=list,
        description="participant ids the consumer connector sending events acts for: a started "
        "transfer fills only their tenants' registered workspaces (empty: any tenant's, unless "
        "several tenants registered it: then none)",
    )

    _strong = field_validator("auth_code")(_strong_secret)


class EdcSettings(_Section):
    connectors: dict[str, EdcConnectorSettings] = Field(
        default_factory=dict, description="connector name -> settings; webhooks at /edc/{name}/{secret}/..."
    )
    callback_deadline_seconds: int = Field(
        default=3600, ge=10, description="give up on a callback after this"
    )
    callback_backoff_seconds: float = Field(
        default=1.0, gt=0, description="first retry delay; doubles, with jitter"
    )
    callback_max_backoff_seconds: float = Field(default=60.0, gt=0)
    callback_timeout_seconds: float = Field(default=10.0, gt=0)
    retention_seconds: int = Field(
        default=0, ge=0, description="keep a deprovisioned workspace's data this long"
    )
    content_address: Literal["access_document", "amazon_s3"] = Field(
        default="access_document",
        description="what the provisioning callback points at: the access document (HttpData) or the bucket",
    )
    access_token_ttl_seconds: int = Field(default=24 * 3600, ge=60, description="tokens in access documents")
    events: EdcEventSettings = Field(default_factory=EdcEventSettings)


class DataPlaneRegistrationSettings(_Section):
    """This data plane registers itself with the control plane (the specification's optional
    `PUT /dataplanes` of the control plane), at every start until the control plane takes it."""

    url: AnyHttpUrl = Field(
        description="the control plane's registration base: PUT {url}/dataplanes (checked against "
        "callback_hosts and callback_networks, as notices are)"
    )
    authorization: dict[str, Any] = Field(
        description="the registration's `authorization` object, sent as given: the authorization "
        "profile the control plane supports (its `type` and that profile's properties)"
    )
    labels: list[str] = Field(default_factory=list, description="the registration's labels")

    @field_validator("authorization")
    @classmethod
    def _typed(cls, value: dict[str, Any]) -> dict[str, Any]:
        kind = value.get("type")
        if not isinstance(kind, str) or not kind.strip():
            raise ValueError("needs a `type`: the authorization profile, e.g. oauth2_client_credentials")
        for name, item in value.items():
            if "secret" in name.lower() and isinstance(item, str) and is_placeholder(item):
                raise ValueError(f"{name} is a placeholder from the documentation: set a real secret")
        return value


class ControlPlaneSettings(_CallbackDestinations):
    secret: SecretStr = Field(
        description="what this control plane sends as `Authorization: Bearer <secret>` on every "
        "signal (32+ characters); it names the control plane"
    )
    endpoint: AnyHttpUrl | None = Field(
        default=None,
        description="the control plane's signaling base URL, for notices (POST "
        "{endpoint}/transfers/{processId}/dataflow/completed|errored) and registration; a "
        "registration (PUT /signaling/v1/controlplanes) replaces it",
    )
    callback_token: SecretStr | None = Field(
        default=None,
        description="sent as `Authorization: Bearer <token>` on notices and registration; unset: "
        "nothing is sent",
    )
    participants: list[str] = Field(
        default_factory=list,
        description="participant ids this control plane acts for as a consumer: prepare binds "
        "only their registered workspaces (empty: it prepares no flow)",
    )
    registration: DataPlaneRegistrationSettings | None = Field(
        default=None, description="register this data plane with the control plane at start; unset: not"
    )

    _strong = field_validator("secret")(_strong_secret)
    _real_token = field_validator("callback_token")(_not_placeholder)


class SignalingSettings(_Section):
    """The Eclipse Data Plane Signaling API at /signaling/v1 (docs/edc.md)."""

    control_planes: dict[str, ControlPlaneSettings] = Field(
        default_factory=dict, description="control plane name -> settings; none: the API is off"
    )
    token_ttl_seconds: int = Field(
        default=24 * 3600, ge=60, description="lifetime of the token in a started flow's data address"
    )
    dataplane_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        description="this data plane's id in registrations; unset: provider-<host of server.public_url>",
    )

    @field_validator("control_planes")
    @classmethod
    def _names(cls, value: dict[str, ControlPlaneSettings]) -> dict[str, ControlPlaneSettings]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name):
                raise ValueError(f"{name!r}: a control plane's name is 1-64 letters, digits, '.', '_' or '-'")
        return value

    http_networks: list[str] = Field(
        default_factory=list,
        description="CIDRs whose addresses a consumer flow may fetch from over plain HTTP (the HTTP "
        "profile requires HTTPS; empty: HTTPS only)",
    )
    notice_max_attempts: int = Field(default=20, ge=1, description="tries of one notice before giving up")
    notice_backoff_seconds: float = Field(
        default=1.0, gt=0, description="first retry delay; doubles, with jitter"
    )
    notice_max_backoff_seconds: float = Field(default=300.0, gt=0)
    retention_seconds: int = Field(
        default=0,
        ge=0,
        description="keep an ended provider flow's workspace data this long (closed to the "
        "consumer at once; 0: deleted at once)",
    )
    complete_after_idle_seconds: int | None = Field(
        default=None,
        ge=1,
        description="a provider flow completes by itself (and its control plane is told) once its "
        "workspace has run an execution and none has been active this long; unset: only the "
        "control plane ends flows",
    )

    _networks = field_validator("http_networks")(_check_networks)


class NotificationSettings(_Section):
    deliver: bool = Field(
        default=True, description="this replica sends webhooks (with SQLite, exactly one replica should)"
    )
    allowed_networks: list[str] = Field(
        default_factory=list,
        description="CIDRs webhooks may reach although they are loopback, private or link-local",
    )
    allow_http: bool = Field(
        default=False, description="accept http:// subscription URLs (https only otherwise)"
    )
    timeout_seconds: float = Field(default=10.0, gt=0, description="longest wait for a receiver's answer")
    max_attempts: int = Field(default=12, ge=1, le=1000)
    max_age_seconds: float = Field(default=86_400.0, gt=0, description="a delivery dies once this old")
    backoff_seconds: float = Field(
        default=1.0, gt=0, description="first retry delay ceiling; doubles, full jitter"
    )
    max_backoff_seconds: float = Field(default=600.0, gt=0)
    concurrency: int = Field(
        default=128, ge=1, le=10_000, description="webhook requests in flight per replica"
    )
    batch_size: int = Field(default=256, ge=1, le=10_000, description="deliveries claimed per round")
    poll_seconds: float = Field(default=1.0, gt=0, description="how often the outbox and streams are read")
    lease_seconds: float = Field(
        default=60.0, gt=0, description="a claim's lease; must exceed timeout_seconds"
    )
    retention_seconds: float = Field(
        default=7 * 86_400.0, gt=0, description="events and finished deliveries are kept this long"
    )
    stream_heartbeat_seconds: float = Field(default=15.0, gt=0)

    _networks = field_validator("allowed_networks")(_check_networks)

    @model_validator(mode="after")
    def _lease_outlasts_timeout(self) -> NotificationSettings:
        if self.lease_seconds <= self.timeout_seconds:
            raise ValueError("lease_seconds must be longer than timeout_seconds")
        return self


class TracingSettings(_Section):
    """OpenTelemetry traces (docs/operations.md#tracing); off unless an endpoint is set."""

    otlp_endpoint: str | None = Field(
        default=None,
        description="OTLP over HTTP, e.g. http://otel-collector:4318 (spans go to <endpoint>/v1/traces); "
        "unset: no tracing",
    )
    service_name: str = Field(default="provider", min_length=1)
    sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0, description="of traces that start here")
    headers: dict[str, str] = Field(
        default_factory=dict, description="sent with every export (a collector's key)"
    )


class TesSettings(_Section):
    """The GA4GH TES API (/ga4gh/tes/v1, docs/tes.md): what its service-info says."""

    service_id: str = Field(
        default="provider.tes", min_length=1, description="service-info id, reverse domain name notation"
    )
    organization_name: str = Field(default="provider", min_length=1)
    organization_url: str | None = Field(default=None, description="unset: the public URL")


class LoggingSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["auto", "json", "text"] = Field(
        default="auto", description="auto: text on a terminal, JSON otherwise"
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PROVIDER_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    data_dir: Path = Field(default=Path("data"), description="where embedded state and storage live")
    _source_path: Path | None = PrivateAttr(default=None)
    server: ServerSettings = Field(default_factory=ServerSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    assets: AssetSettings = Field(default_factory=AssetSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    workspaces: WorkspaceSettings = Field(default_factory=WorkspaceSettings)
    tokens: TokenSettings = Field(default_factory=TokenSettings)
    imports: ImportSettings = Field(default_factory=ImportSettings)
    compute: ComputeSettings = Field(default_factory=ComputeSettings)
    executions: ExecutionSettings = Field(default_factory=ExecutionSettings)
    edc: EdcSettings = Field(default_factory=EdcSettings)
    signaling: SignalingSettings = Field(default_factory=SignalingSettings)
    notifications: NotificationSettings = Field(default_factory=NotificationSettings)
    tes: TesSettings = Field(default_factory=TesSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)

    @property
    def source_path(self) -> Path | None:
        """The configuration file these settings were read from (load_settings), if any."""
        return self._source_path

    @property
    def public_url(self) -> str:
        if self.server.public_url is not None:
            return str(self.server.public_url).rstrip("/")
        scheme = "https" if self.server.tls_cert_file is not None else "http"
        return f"{scheme}://{self.server.host}:{self.server.port}"


class ConfigError(Exception):
    """Configuration that cannot be used; the message names each key and its problem."""


class _UnreadableVariable(ValueError):
    """An environment variable whose value is not what its setting takes; names the variable."""


def _list_of_scalars(annotation: Any) -> bool:
    if get_origin(annotation) not in (list, set, frozenset, tuple):
        return False
    return all(
        not (isinstance(item, type) and issubclass(item, BaseModel)) and get_origin(item) not in (list, dict)
        for item in get_args(annotation)
    )


class _EnvironmentSource(EnvSettingsSource):
    """PROVIDER_* variables. A list of plain values is read as JSON when it starts with `[`, else
    as values separated by commas (PROVIDER_IMPORTS__ALLOWED_NETWORKS=127.0.0.0/8,10.0.0.0/8);
    other structured values (sections, lists of objects) as JSON."""

    def decode_complex_value(self, field_name: str, field: FieldInfo | None, value: Any) -> Any:
        listed = field is not None and _list_of_scalars(field.annotation)
        if listed and isinstance(value, str) and not value.lstrip().startswith("["):
            return [item.strip() for item in value.split(",") if item.strip()]
        try:
            return super().decode_complex_value(field_name, field, value)  # type: ignore[arg-type]
        except ValueError as exc:
            problem = "starts with [ but is not a JSON array" if listed else "is not JSON"
            raise _UnreadableVariable(f"{self._variable(field_name, value)}: {problem} ({exc})") from None

    def _variable(self, field_name: str, value: Any) -> str:
        """The variable that holds `value` for the setting `field_name`, as the operator spelled it."""
        suffix = field_name.lower()
        names = [
            name for name, held in self.env_vars.items() if held == value and name.lower().endswith(suffix)
        ]
        spelled = {name.lower(): name for name in os.environ}
        return " or ".join(spelled.get(name.lower(), name.upper()) for name in names) or field_name


def _settings_class(yaml_path: Path | None) -> type[Settings]:
    class _FromFile(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            sources: list[PydanticBaseSettingsSource] = [init_settings, _EnvironmentSource(settings_cls)]
            if yaml_path is not None:
                sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_path))
            return tuple(sources)

    return _FromFile


def resolve_config_path(explicit: str | Path | None, env: dict[str, str] | None = None) -> Path | None:
    """`--config`, else $PROVIDER_CONFIG, else config/provider.yaml when it exists, else none."""
    env = dict(os.environ) if env is None else env
    if explicit:
        return Path(explicit)
    if env.get(ENV_CONFIG_PATH):
        return Path(env[ENV_CONFIG_PATH])
    return DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.is_file() else None


def load_settings(config_path: str | Path | None = None, **overrides: Any) -> Settings:
    """Load and validate; raises ConfigError with one line per problem."""
    path = resolve_config_path(config_path)
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"configuration file {path} does not exist")
        try:
            content = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"configuration file {path} is not valid YAML: {exc}") from exc
        if content is not None and not isinstance(content, dict):
            raise ConfigError(f"configuration file {path} must hold a mapping of keys")
    try:
        settings = _settings_class(path)(**overrides)
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc, path)) from exc
    except SettingsError as exc:
        raise ConfigError(f"invalid configuration (PROVIDER_* environment): {exc.__cause__ or exc}") from exc
    settings._source_path = path.resolve() if path is not None else None
    return settings


def describe_errors(exc: ValidationError, path: Path | None) -> str:
    source = f" (file {path} or PROVIDER_* environment)" if path else " (PROVIDER_* environment)"
    lines = [f"invalid configuration{source}:"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(root)"
        got = "" if err["type"] == "missing" else f" (got {_shown(key, err.get('input'))})"
        lines.append(f"  {key}: {err['msg']}{got}")
    return "\n".join(lines)


def _shown(key: str, value: Any) -> str:
    if any(word in key for word in ("key", "secret", "password", "token", "auth_code", "authorization")):
        return "a value that is not shown"
    # A URL's password (store.url) is not shown either.
    text = re.sub(r"(://[^/:@\s]*:)[^@\s]*@", r"\1***@", repr(value))
    return text if len(text) <= 80 else text[:77] + "..."
