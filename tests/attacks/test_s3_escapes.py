"""A consumer holding one workspace's temporary S3 credentials tries every way out of it, on a
real Ceph radosgw, through the real service: STS role chaining (signed in headers and in the
query string), other STS calls, bucket-level calls, and the other workspace's data.

Both layouts are attacked: a bucket per workspace, and workspaces as prefixes of one shared bucket.

On Ceph the shared-role set-up lets a session assume the role again without its session policy;
the last tests show that escape is real there, and that the service refuses to start on it."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from provider.app import create_app
from provider.backends.storage.s3_isolation import Place
from provider.backends.storage.s3_signed import Answer, Keys, SignedHttp, parse_assumed_credentials
from provider.config import ConfigError, Settings
from tests.conftest import ADMIN_KEY, REPO, S3_ROLE_ARN, Api, place, s3_settings

pytestmark = pytest.mark.s3


def service_settings(radosgw: str, tmp_path: Path, **s3: Any) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        auth={"bootstrap_admin_key": ADMIN_KEY, "key_cache_seconds": 0},
        assets={"directory": REPO / "config" / "assets"},
        storage=s3_settings(radosgw, s3=s3),
    )


async def two_workspaces(api: Api) -> tuple[str, dict[str, Any], dict[str, Any]]:
    tenant = await api.json(
        "POST", "/api/v1/tenants", 201, key=ADMIN_KEY, json={"participant_id": "did:web:x"}
    )
    key = (await api.json("POST", f"/api/v1/tenants/{tenant['id']}/api-keys", 201, key=ADMIN_KEY, json={}))[
        "key"
    ]
    a = await api.json("POST", "/api/v1/workspaces", 201, key=key, json={"name": "mine"})
    b = await api.json("POST", "/api/v1/workspaces", 201, key=key, json={"name": "theirs"})
    await api.json("PUT", f"/api/v1/workspaces/{b['id']}/objects/secret.txt", 201, key=key, data=b"B's data")
    return key, a, b


@pytest.fixture
async def signer() -> AsyncIterator[SignedHttp]:
    http = SignedHttp("us-east-1")
    yield http
    await http.close()


async def assume(http: SignedHttp, endpoint: str, keys: Keys, arn: str, in_query: bool) -> Answer:
    form = {
        "Action": "AssumeRole",
        "Version": "2011-06-15",
        "RoleArn": arn,
        "RoleSessionName": "escape",
        "DurationSeconds": "900",
    }
    return await http.send("POST", endpoint, "sts", keys, form=form, sign_in_query=in_query)


async def escapes(http: SignedHttp, endpoint: str, keys: Keys, other: Place, arns: list[str]) -> list[str]:
    """Every escape that worked with these credentials."""
    worked = []
    secret = f"{endpoint}/{other.bucket}/{other.prefix}secret.txt"
    for arn in arns:
        for in_query in (False, True):
            answer = await assume(http, endpoint, keys, arn, in_query)
            if answer.ok:
                chained = parse_assumed_credentials(answer.body)
                session = Keys(chained["AccessKeyId"], chained["SecretAccessKey"], chained["SessionToken"])
                read = await http.send("GET", secret, "s3", session)
                worked.append(f"AssumeRole {arn} {'query' if in_query else 'header'}: read B={read.ok}")
    probes = {
        "GetSessionToken": ("POST", endpoint, "sts", {"Action": "GetSessionToken", "Version": "2011-06-15"}),
        "AssumeRoleWithWebIdentity": (
            "POST",
            endpoint,
            "sts",
            {
                "Action": "AssumeRoleWithWebIdentity",
                "Version": "2011-06-15",
                "RoleArn": arns[0],
                "RoleSessionName": "escape",
                "WebIdentityToken": "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
            },
        ),
    }
    for name, (method, url, service, form) in probes.items():
        if (await http.send(method, url, service, keys, form=form)).ok:
            worked.append(name)
    if (await http.send("GET", f"{endpoint}/", "s3", keys)).ok:
        worked.append("ListBuckets")
    if (await http.send("PUT", f"{endpoint}/pt-escape-made-by-a-consumer", "s3", keys)).ok:
        worked.append("CreateBucket")
    if (await http.send("GET", secret, "s3", keys)).ok:
        worked.append("GetObject on B")
    if (await http.send("PUT", f"{endpoint}/{other.bucket}/{other.prefix}x", "s3", keys, form=b"x")).ok:
        worked.append("PutObject on B")
    listing = {"list-type": "2", "prefix": other.prefix}
    if (await http.send("GET", f"{endpoint}/{other.bucket}", "s3", keys, query=listing)).ok:
        worked.append("ListObjects on B")
    if other.shared:
        for query in ({"list-type": "2"}, {"uploads": ""}, {"versions": ""}, {"policy": ""}):
            if (await http.send("GET", f"{endpoint}/{other.bucket}", "s3", keys, query=query)).ok:
                worked.append(f"GET on the shared bucket with {query}")
    return worked


async def test_workspace_credentials_cannot_leave_their_workspace(
    aiohttp_client, radosgw: str, tmp_path: Path, contract, signer: SignedHttp, layout: dict[str, Any]
) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(create_app(service_settings(radosgw, tmp_path, **layout)))
    api = Api(client, contract, client.app)
    key, a, b = await two_workspaces(api)
    creds = await api.json("POST", f"/api/v1/workspaces/{a['id']}/credentials", 201, key=key)
    keys = Keys(creds["access_key_id"], creds["secret_access_key"], creds["session_token"])
    mine, theirs = place(a), place(b)
    bucket_a = mine.bucket
    # They work on their own workspace ...
    assert (await signer.send("PUT", f"{radosgw}/{bucket_a}/{mine.prefix}mine.txt", "s3", keys)).ok
    # ... and on nothing else: B's role, the shared role of the other set-up, any STS call.
    arns = [f"arn:aws:iam:::role/{theirs.name}", S3_ROLE_ARN]
    assert await escapes(signer, radosgw, keys, theirs, arns) == []
    # Bucket-level changes on their own bucket are refused too.
    public = '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject",'
    public += f'"Resource":"arn:aws:s3:::{bucket_a}/*"}}]}}'
    policy = await signer.send(
        "PUT", f"{radosgw}/{bucket_a}", "s3", keys, query={"policy": ""}, form=public.encode()
    )
    assert policy.status == 403
    acl = await signer.send("PUT", f"{radosgw}/{bucket_a}", "s3", keys, query={"acl": ""}, form=b"")
    assert acl.status in (400, 403)  # refused, whatever the body
    # Chaining to the workspace's own role is the one call that works, and it stays inside.
    own = await assume(signer, radosgw, keys, f"arn:aws:iam:::role/{mine.name}", in_query=True)
    own_listing = {"list-type": "2", "prefix": mine.prefix}
    if own.ok:
        chained = parse_assumed_credentials(own.body)
        session = Keys(chained["AccessKeyId"], chained["SecretAccessKey"], chained["SessionToken"])
        assert await escapes(signer, radosgw, session, theirs, arns) == []
        # Deleting the workspace ends every session of it at once, chained ones included.
        await api.json("DELETE", f"/api/v1/workspaces/{a['id']}", 204, key=key)
        assert not (await signer.send("GET", f"{radosgw}/{bucket_a}", "s3", session, query=own_listing)).ok
    else:
        await api.json("DELETE", f"/api/v1/workspaces/{a['id']}", 204, key=key)
    assert not (await signer.send("PUT", f"{radosgw}/{bucket_a}/{mine.prefix}after.txt", "s3", keys)).ok
    assert not (await signer.send("GET", f"{radosgw}/{bucket_a}", "s3", keys, query=own_listing)).ok


async def test_job_credentials_of_an_execution_cannot_leave_the_workspace(
    aiohttp_client, radosgw: str, tmp_path: Path, contract, signer: SignedHttp, layout: dict[str, Any]
) -> None:  # type: ignore[no-untyped-def]
    """The sidecar's credentials come from the same place as a consumer's: same escapes, same answer."""
    client = await aiohttp_client(create_app(service_settings(radosgw, tmp_path, **layout)))
    api = Api(client, contract, client.app)
    _, a, b = await two_workspaces(api)
    from provider.api.context import CONTEXT

    storage = client.app[CONTEXT].workspaces.storage
    access = await storage.job_access(a["storage"]["location"], 900)
    assert access.settings["PROVIDER_S3_PREFIX"] == place(a).prefix
    keys = Keys(
        *(
            access.secrets[name]
            for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
        )
    )
    theirs = place(b)
    assert (
        await escapes(signer, radosgw, keys, theirs, [f"arn:aws:iam:::role/{theirs.name}", S3_ROLE_ARN]) == []
    )


async def test_the_shared_role_set_up_lets_sessions_chain_out_on_ceph(
    aiohttp_client,
    radosgw: str,
    tmp_path: Path,
    contract,
    signer: SignedHttp,
    caplog: pytest.LogCaptureFixture,
) -> None:  # type: ignore[no-untyped-def]
    """Why the mode exists: with one shared role, a session assumes the role again without its
    session policy and reads the other workspace. The service starts on it only when told to."""
    settings = service_settings(
        radosgw, tmp_path, sts={"mode": "shared_role", "role_arn": S3_ROLE_ARN, "allow_role_chaining": True}
    )
    with caplog.at_level(logging.CRITICAL):
        client = await aiohttp_client(create_app(settings))
    assert any("ISOLATION IS BROKEN" in r.getMessage() for r in caplog.records)
    api = Api(client, contract, client.app)
    key, a, b = await two_workspaces(api)
    creds = await api.json("POST", f"/api/v1/workspaces/{a['id']}/credentials", 201, key=key)
    keys = Keys(creds["access_key_id"], creds["secret_access_key"], creds["session_token"])
    worked = await escapes(signer, radosgw, keys, place(b), [S3_ROLE_ARN])
    assert any("read B=True" in item for item in worked), worked


async def test_the_service_refuses_to_start_where_sessions_can_chain_out(
    aiohttp_client, radosgw: str, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    settings = service_settings(radosgw, tmp_path, sts={"mode": "shared_role", "role_arn": S3_ROLE_ARN})
    with pytest.raises(ConfigError, match=r"storage\.s3\.sts\.mode.*role_per_workspace"):
        await aiohttp_client(create_app(settings))
