"""What an operator watches: /metrics answers their questions, and every metric the shipped
Grafana dashboard and Prometheus alerts use is one the service exports."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families

from provider.backends.storage.metered import MeteredStorage
from provider.config import Settings
from provider.domain.errors import NotFound, Unavailable
from tests.conftest import REPO, WAIT_SECONDS, Api, live_api
from tests.test_executions import exec_settings, local_compute, run, setup, until

__all__ = ["exec_settings"]  # a fixture this module uses

MONITORING = REPO / "deploy" / "monitoring"
CHART = REPO / "deploy" / "helm" / "provider"
SUFFIXES = {
    "_bucket": "histogram",
    "_count": "histogram",
    "_sum": "histogram",
    "_total": "counter",
    "_created": None,
}


@pytest.fixture
def ops_settings(exec_settings: Settings) -> Settings:
    imports = exec_settings.imports.model_copy(
        update={"allowed_networks": ["127.0.0.0/8"], "max_attempts": 1}
    )
    return exec_settings.model_copy(update={"imports": imports})


@pytest.fixture
async def live(ops_settings: Settings, contract: Any) -> AsyncIterator[Api]:
    api, close = await live_api(ops_settings, contract, compute=local_compute(ops_settings))
    yield api
    await close()


@pytest.fixture
async def source() -> AsyncIterator[str]:
    async def payload(_: web.Request) -> web.Response:
        return web.Response(body=b"x" * 1000)

    app = web.Application()
    app.router.add_get("/payload", payload)
    server = TestServer(app)
    await server.start_server()
    yield str(server.make_url(""))
    await server.close()


async def scrape(api: Api) -> dict[str, Any]:
    """Families by name: {name: (type, {(sample name, labels): value})}."""
    response = await api.request("GET", "/metrics")
    families = {}
    for family in text_string_to_metric_families(await response.text()):
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}
        families[family.name] = (family.type, samples)
    return families


def value(families: dict[str, Any], family: str, sample: str, **labels: str) -> float:
    _, samples = families[family]
    wanted = tuple(sorted(labels.items()))
    return sum(v for (name, have), v in samples.items() if name == sample and set(wanted) <= set(have))


async def test_metrics_answer_an_operators_questions(live: Api, source: str) -> None:
    key, ws = await setup(live)
    await live.json("PUT", f"/api/v1/workspaces/{ws}/objects/in.bin", 201, key=key, data=b"abc")
    done = await run(live, key, ws, "dummy", inputs={"source": "in.bin"}, env={"SLEEP_SECONDS": "0"})
    await until(live, key, done, {"COMPLETE"})
    waiting = await run(live, key, ws, "dummy", inputs={"source": "in.bin"}, env={"SLEEP_SECONDS": "600"})
    await until(live, key, waiting, {"RUNNING"})
    for target, url in (("ok.bin", f"{source}/payload"), ("missing.bin", f"{source}/missing")):
        item = await live.json(
            "POST",
            f"/api/v1/workspaces/{ws}/imports",
            202,
            key=key,
            json={"source_url": url, "target_key": target},
        )
        deadline = time.monotonic() + WAIT_SECONDS
        while item["state"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline, item
            item = await live.json("GET", f"/api/v1/workspaces/{ws}/imports/{item['id']}", 200, key=key)

    metrics = await scrape(live)
    # What runs now, where, and how long the queue is.
    assert (
        value(
            metrics,
            "provider_executions",
            "provider_executions",
            state="RUNNING",
            asset="dummy",
            backend="local",
        )
        == 1
    )
    assert value(metrics, "provider_execution_queue_depth", "provider_execution_queue_depth") == 0
    assert (
        value(metrics, "provider_execution_oldest_queued_seconds", "provider_execution_oldest_queued_seconds")
        == 0
    )
    # How executions ended, and how long each phase took.
    finished = "provider_executions_finished_total"
    assert value(metrics, "provider_executions_finished", finished, state="COMPLETE", asset="dummy") == 1
    phases = "provider_execution_phase_seconds"
    for phase in ("queued", "staging_in", "running", "staging_out"):
        assert value(metrics, phases, phases + "_count", phase=phase, asset="dummy") >= 1, phase
    # Imports by outcome, and their bytes.
    assert (
        value(metrics, "provider_imports_finished", "provider_imports_finished_total", outcome="succeeded")
        == 1
    )
    assert (
        value(metrics, "provider_imports_finished", "provider_imports_finished_total", outcome="failed") == 1
    )
    assert value(metrics, "provider_import_bytes", "provider_import_bytes_total") == 1000
    # The compute backend: this replica observes its jobs.
    assert value(metrics, "provider_leader", "provider_leader") == 1
    # Every provisioning state is a series from the start, so the first failure is a change.
    states = {dict(labels)["state"] for (_, labels) in metrics["provider_edc_provisionings"][1]}
    assert {"failed", "provisioned", "callback_pending"} <= states
    assert metrics["provider_storage_errors"][0] == "counter"

    # After the cancel: nothing runs, and the end is counted by its state.
    await live.json("POST", f"/api/v1/executions/{waiting['id']}/cancel", 202, key=key)
    await until(live, key, waiting, {"CANCELED"})
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        metrics = await scrape(live)
        if value(metrics, "provider_executions", "provider_executions", state="RUNNING") == 0:
            break
        assert time.monotonic() < deadline
        await asyncio.sleep(0.5)  # the gauges are read from the store at most every 2 s
    assert value(metrics, "provider_executions_finished", finished, state="CANCELED", asset="dummy") == 1


def referenced_metrics() -> set[str]:
    texts = [
        (MONITORING / "grafana-dashboard.json").read_text(),
        (MONITORING / "prometheusrule.yaml").read_text(),
    ]
    names = set()
    for text in texts:
        names |= set(re.findall(r"\b(provider_[a-z0-9_]+)", text))
    return {n for n in names if not n.startswith("provider_overview")}


async def test_every_metric_the_dashboard_and_the_alerts_use_is_exported(api: Api) -> None:
    response = await api.request("GET", "/metrics")
    families = {f.name: f.type for f in text_string_to_metric_families(await response.text())}
    referenced = referenced_metrics()
    assert len(referenced) >= 15
    for name in sorted(referenced):
        family, kind = name, None
        for suffix, suffix_kind in SUFFIXES.items():
            if name.endswith(suffix) and name.removesuffix(suffix) in families:
                family, kind = name.removesuffix(suffix), suffix_kind
        assert family in families, f"{name} is used but not exported"
        if kind is not None:
            assert families[family] == kind, f"{name}: {family} is a {families[family]}, not a {kind}"
        elif families[family] in ("counter", "histogram"):
            pytest.fail(f"{name}: a {families[family]} is queried without its _total/_bucket suffix")


def test_the_dashboard_is_grafana_json_with_a_query_in_every_panel() -> None:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    assert dashboard["uid"] and dashboard["panels"]
    for panel in dashboard["panels"]:
        assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]


def test_the_chart_and_the_kustomize_alerts_are_the_same_and_each_has_a_runbook() -> None:
    chart = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    shipped = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    assert shipped["kind"] == "PrometheusRule" and shipped["spec"] == chart
    runbook = (REPO / "docs" / "operations.md").read_text().lower()
    for rule in chart["groups"][0]["rules"]:
        anchor = rule["annotations"]["runbook"].split("#")[1]
        assert f"### {rule['alert'].lower()}" in runbook, f"docs/operations.md has no section {anchor}"
        assert rule["labels"]["severity"] in ("warning", "critical")


async def test_metrics_answer_while_the_store_is_down() -> None:
    from contextlib import asynccontextmanager

    from prometheus_client import CollectorRegistry, generate_latest

    from provider.api.metrics import OperationsMetrics

    class Down:
        @asynccontextmanager
        async def read(self) -> Any:
            raise Unavailable("the database is busy")
            yield

    registry = CollectorRegistry()
    metrics = OperationsMetrics(registry, "local", refresh_seconds=0)
    await metrics.refresh(Down(), datetime.now(UTC))  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    assert "provider_metrics_store_errors_total 1.0" in text


async def test_storage_failures_are_counted_and_the_callers_mistakes_are_not() -> None:
    failed: list[tuple[str, str]] = []

    class Flaky:
        name = "s3"

        async def head(self, location: str, key: str) -> None:
            raise Unavailable("the storage did not answer")

        async def delete(self, location: str, key: str) -> None:
            raise NotFound("object", key)

        def location_for(self, name: str) -> str:
            return name

        async def put(self, location: str, key: str, chunks: Any, limits: Any) -> None:
            async for _ in chunks:
                pass

    storage = MeteredStorage(Flaky(), lambda backend, operation: failed.append((backend, operation)))
    with pytest.raises(Unavailable):
        await storage.head("b", "k")
    with pytest.raises(NotFound):
        await storage.delete("b", "k")
    assert storage.location_for("x") == "x" and storage.name == "s3"

    async def stalled() -> Any:
        yield b"part"
        raise TimeoutError("the client stopped sending")

    with pytest.raises(TimeoutError):
        await storage.put("b", "k", stalled(), None)
    assert failed == [("s3", "head")]  # the client that stalled is not the storage's failure


async def test_the_service_serves_https_natively_with_a_configured_certificate(
    settings: Settings, tmp_path: Path
) -> None:
    import datetime as dt
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from provider.app import create_app
    from provider.server import start

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "tls.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server = settings.server.model_copy(
        update={"port": 0, "tls_cert_file": tmp_path / "tls.crt", "tls_key_file": tmp_path / "tls.key"}
    )
    tls = settings.model_copy(update={"server": server})
    assert tls.public_url.startswith("https://")
    runner, site = await start(create_app(tls), server)
    try:
        trusted = ssl.create_default_context(cafile=str(tmp_path / "tls.crt"))
        import aiohttp

        async with aiohttp.ClientSession() as session:
            async with session.get(f"https://127.0.0.1:{site.port}/healthz", ssl=trusted) as answer:
                assert answer.status == 200
            with pytest.raises(aiohttp.ClientError):  # plain HTTP on the TLS port is no request
                async with session.get(f"http://127.0.0.1:{site.port}/healthz") as answer:
                    await answer.read()
                    assert answer.status >= 400
                    raise aiohttp.ClientError("answered in plain HTTP")
    finally:
        await runner.cleanup()
    with pytest.raises(ValueError, match="go together"):
        settings.server.model_validate({"tls_cert_file": str(tmp_path / "tls.crt")})
