"""Shared fixtures: settings in a temporary data directory, stores on SQLite and PostgreSQL,
and an HTTP client whose every response is checked against contracts/openapi.yaml."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg
import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient

from provider.app import Components, build_components, create_app, prepare_store, read_assets, utcnow
from provider.backends.sql import SqlStore, default_sqlite_url
from provider.backends.sql import migrate as migrations
from provider.config import Settings
from provider.domain.tenants import Principal
from tests.contract import OpenApiContract
from tests.fakes import DrivenCompute, MemoryStorage

REPO = Path(__file__).resolve().parents[1]
POSTGRES_URL = os.environ.get(
    "PROVIDER_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
ADMIN_KEY = "test-admin-key-" + "a" * 32


S3_ENDPOINT = os.environ.get("PROVIDER_TEST_S3_ENDPOINT", "")
S3_PORT = os.environ.get("PROVIDER_TEST_S3_PORT", "7480")
S3_ACCESS_KEY = "RGWADMINKEY0000000001"
S3_SECRET_KEY = "rgwadminsecret000000000000000000000000001"
# The shared-role set-up (docs/storage.md, AWS and MinIO). On Ceph it lets sessions chain to the
# whole role, so the suite uses role_per_workspace and keeps this one to prove the escape.
S3_ROLE = "provider-test-workspaces"
S3_ROLE_ARN = f"arn:aws:iam:::role/{S3_ROLE}"
S3_BUCKET_PATTERN = "pt-*"


def postgres_enabled() -> bool:
    return POSTGRES_URL.lower() not in ("", "none", "off")


# How long a test waits for something that should happen: far longer than a working system needs
# even on a loaded machine, so that only a fault reaches it.
WAIT_SECONDS = 60.0
T = TypeVar("T")


async def poll_until(
    condition: Callable[[], T | Awaitable[T]],
    what: str | Callable[[], str],
    within: float = WAIT_SECONDS,
    every: float = 0.05,
) -> T:
    """Poll `condition` (plain or async) every `every` seconds until it returns something true, and
    return that; fail naming `what` (a text, or a function giving one) after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {within:g} s for {what() if callable(what) else what}")
        await asyncio.sleep(every)


class MovableClock:
    """The service's clock in tests: the wall clock plus an offset that a test moves forward, so
    that expiry decided by the service is reached at once instead of waited for."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return utcnow() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


@pytest.fixture(scope="session")
def contract() -> OpenApiContract:
    return OpenApiContract.load()


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty database at the newest schema, made once: a test copies it (a millisecond)
    instead of running every migration again (a fifth of a second, hundreds of times)."""
    directory = tmp_path_factory.mktemp("schema")

    async def migrate() -> None:
        store = SqlStore(default_sqlite_url(directory))
        await migrations.upgrade(store)
        await store.close()

    asyncio.run(migrate())
    return directory / "provider.db"


@pytest.fixture
def settings(tmp_path: Path, migrated_sqlite: Path) -> Settings:
    """A service in a data directory of its own, whose SQLite database is at the newest schema
    already (start-up finds nothing to migrate; tests/test_store.py runs the migrations)."""
    data = tmp_path / "data"
    data.mkdir()
    shutil.copyfile(migrated_sqlite, data / "provider.db")
    return Settings(
        data_dir=data,
        auth={"bootstrap_admin_key": ADMIN_KEY, "key_cache_seconds": 0},
        assets={"directory": REPO / "config" / "assets"},
    )


@dataclass
class ServiceWorld:
    """The services wired as app.py wires them, over in-memory storage and a compute backend
    the test drives (tests/fakes.py), on a SQLite file, with a clock the test moves."""

    components: Components
    storage: MemoryStorage
    compute: DrivenCompute
    admin: Principal
    clock: MovableClock


@pytest.fixture
async def services(settings: Settings, clock: MovableClock) -> AsyncIterator[ServiceWorld]:
    storage, compute = MemoryStorage(clock), DrivenCompute()
    components = build_components(settings, compute=compute, storage=storage, clock=clock)
    await prepare_store(components)
    await components.assets.load(read_assets(settings))
    await compute.start(components.executions.on_event, components.executions.reconcile)
    admin = await components.auth.authenticate(f"Bearer {ADMIN_KEY}")
    yield ServiceWorld(components, storage, compute, admin, clock)
    await components.executions.stop()
    await components.store.close()


async def _postgres_store() -> AsyncIterator[SqlStore]:
    """A store in a fresh PostgreSQL schema, dropped afterwards."""
    schema = f"test_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(POSTGRES_URL.replace("postgresql+asyncpg", "postgresql"))
    try:
        await admin.execute(f'CREATE SCHEMA "{schema}"')
        store = SqlStore(POSTGRES_URL, schema=schema, pool_size=5)
        try:
            await migrations.upgrade(store)
            yield store
        finally:
            await store.close()
    finally:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()


def _ensure_role(endpoint: str) -> None:
    """The shared-role set-up (docs/storage.md, for AWS and MinIO): a role the service user may
    assume, allowed everything on workspace buckets; session policies narrow it to one bucket."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError

    iam = boto3.client(
        "iam",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=S3_ACCESS_KEY,
        aws_secret_access_key=S3_SECRET_KEY,
        config=Config(signature_version="s3v4"),
    )
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": ["arn:aws:iam:::user/admin"]},
                "Action": ["sts:AssumeRole"],
            }
        ],
    }
    try:
        iam.create_role(
            RoleName=S3_ROLE, Path="/", AssumeRolePolicyDocument=json.dumps(trust, separators=(",", ":"))
        )
    except ClientError as exc:
        if exc.response["ResponseMetadata"]["HTTPStatusCode"] != 409:
            raise
    permissions = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["s3:*"],
                "Resource": [f"arn:aws:s3:::{S3_BUCKET_PATTERN}", f"arn:aws:s3:::{S3_BUCKET_PATTERN}/*"],
            }
        ],
    }
    iam.put_role_policy(
        RoleName=S3_ROLE,
        PolicyName="workspaces",
        PolicyDocument=json.dumps(permissions, separators=(",", ":")),
    )


@pytest.fixture(scope="session")
def radosgw() -> Iterator[str]:
    """A real S3 server: PROVIDER_TEST_S3_ENDPOINT, else our own Ceph radosgw on loopback."""
    if S3_ENDPOINT.lower() == "off":
        pytest.skip("PROVIDER_TEST_S3_ENDPOINT=off")
    if S3_ENDPOINT:
        _ensure_role(S3_ENDPOINT)
        yield S3_ENDPOINT
        return
    script = REPO / "tests" / "services" / "radosgw.sh"
    try:
        subprocess.run(["bash", str(script), "start", S3_PORT], check=True, timeout=600)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
        # Leave nothing half-started behind for the next run.
        subprocess.run(["bash", str(script), "stop", S3_PORT], check=False, timeout=120)
        raise
    endpoint = f"http://127.0.0.1:{S3_PORT}"
    try:
        _ensure_role(endpoint)
        yield endpoint
    finally:
        subprocess.run(["bash", str(script), "stop", S3_PORT], check=False, timeout=120)


def s3_settings(endpoint: str, **changes: Any) -> dict[str, Any]:
    """Storage settings for the radosgw as docs/storage.md sets up Ceph (a role per workspace),
    with a bucket prefix of its own for each test."""
    settings: dict[str, Any] = {
        "backend": "s3",
        "s3": {
            "endpoint_url": endpoint,
            "access_key_id": S3_ACCESS_KEY,
            "secret_access_key": S3_SECRET_KEY,
            "bucket_prefix": f"pt-{uuid.uuid4().hex[:8]}-",
            "part_size_bytes": 5 * 1024 * 1024,
            "sts": {"mode": "role_per_workspace", "duration_seconds": 900},
        },
    }
    s3_changes = dict(changes.pop("s3", {}))
    settings["s3"]["sts"].update(s3_changes.pop("sts", {}))
    settings["s3"].update(s3_changes)
    settings.update(changes)
    return settings


# The S3 layouts the isolation tests attack; one shared bucket, so that every workspace of a test
# lives beside the others in it.
LAYOUTS = {"bucket_per_workspace": {}, "shared_buckets": {"layout": "shared_buckets", "shared_buckets": 1}}


@pytest.fixture(params=list(LAYOUTS))
def layout(request: pytest.FixtureRequest) -> dict[str, Any]:
    """storage.s3 settings of one layout (use with s3_settings(..., s3={**layout}))."""
    return dict(LAYOUTS[request.param])


def place(workspace: dict[str, Any]) -> Any:
    """Where a workspace (as the API shows it) lives on the S3 server."""
    from provider.backends.storage.s3_isolation import Place

    return Place.of(workspace["storage"]["location"])


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SqlStore]:
    if request.param == "sqlite":
        sqlite = SqlStore(default_sqlite_url(tmp_path))
        await migrations.upgrade(sqlite)
        yield sqlite
        await sqlite.close()
        return
    if not postgres_enabled():
        pytest.skip("PROVIDER_TEST_POSTGRES_URL is off")
    async for pg in _postgres_store():
        yield pg


@dataclass
class Api:
    """A test client that checks every response against the OpenAPI contract."""

    client: TestClient[web.Request, web.Application]
    contract: OpenApiContract
    app: web.Application

    async def request(
        self, method: str, path: str, *, key: str | None = None, check: bool = True, **kwargs: Any
    ) -> ClientResponse:
        headers = dict(kwargs.pop("headers", {}))
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        response = await self.client.request(method, path, headers=headers, **kwargs)
        body = await response.read()
        if check:
            problems = self.contract.check_response(
                method, urlsplit(path).path, response.status, response.content_type, body
            )
            assert not problems, "response breaks the contract:\n" + "\n".join(problems)
        return response

    async def json(self, method: str, path: str, status: int, **kwargs: Any) -> Any:
        """Request, assert the status, return the decoded JSON body."""
        response = await self.request(method, path, **kwargs)
        text = await response.text()
        assert response.status == status, f"{method} {path}: {response.status} {text}"
        return await response.json(content_type=None) if text else None


@pytest.fixture
async def api(
    aiohttp_client: Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]],
    settings: Settings,
    contract: OpenApiContract,
    clock: MovableClock,
) -> Api:
    app = create_app(settings, clock=clock)
    client = await aiohttp_client(app)
    return Api(client, contract, app)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def live_api(
    settings: Settings, contract: OpenApiContract, compute: Any = None
) -> tuple[Api, Callable[[], Awaitable[None]]]:
    """The service on a real port that its own job sidecars can reach (public_url matches)."""
    from aiohttp.test_utils import TestServer

    port = free_port()
    server_settings = settings.server.model_copy(
        update={"port": port, "public_url": f"http://127.0.0.1:{port}"}
    )
    app = create_app(settings.model_copy(update={"server": server_settings}), compute=compute)
    client = TestClient(TestServer(app, port=port))
    await client.start_server()
    return Api(client, contract, app), client.close


@dataclass
class Consumer:
    tenant_id: str
    key: str


@pytest.fixture
def new_consumer(api: Api) -> Callable[[str], Awaitable[Consumer]]:
    """Create a tenant with a consumer key through the API."""

    async def make(participant: str = "") -> Consumer:
        participant = participant or f"did:web:{uuid.uuid4().hex[:8]}.example"
        tenant = await api.json(
            "POST", "/api/v1/tenants", 201, key=ADMIN_KEY, json={"participant_id": participant}
        )
        issued = await api.json(
            "POST", f"/api/v1/tenants/{tenant['id']}/api-keys", 201, key=ADMIN_KEY, json={"name": "test"}
        )
        return Consumer(tenant["id"], issued["key"])

    return make
