"""The kind quick start (deploy/kind/): it cannot run here (no Docker daemon, no kind), so every
piece of it that can be checked is: each manifest it applies validates strictly against
Kubernetes, its Helm values are settings the service loads, the images it builds and loads are
the ones the chart, the sidecar setting and the dummy asset name, the scripts parse, and the
demo it ends with runs for real against a service."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from provider import __version__
from provider.config import Settings
from tests.conftest import ADMIN_KEY, REPO
from tests.live_service import serve
from tests.test_deploy import validation_problem

KIND = REPO / "deploy" / "kind"


def documents(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((KIND / name).read_text()) if d]


@pytest.mark.parametrize("name", ["postgres.yaml", "minio.yaml"])
def test_every_manifest_the_quick_start_applies_validates_strictly(name: str) -> None:
    found = documents(name)
    assert found
    for document in found:
        assert validation_problem(document) is None, validation_problem(document)
        assert document["metadata"]["namespace"] == "provider"


def test_the_quick_start_script_applies_exactly_these_files_and_parses() -> None:
    script = (KIND / "quickstart.sh").read_text()
    applied = set(re.findall(r'-f "\$here/([\w.-]+)"', script))
    assert applied == {"postgres.yaml", "minio.yaml"}
    assert '--config "$here/cluster.yaml"' in script and '--values "$here/values.yaml"' in script
    for name in ("quickstart.sh", "demo.sh"):
        subprocess.run(["bash", "-n", str(KIND / name)], check=True)
    cluster = yaml.safe_load((KIND / "cluster.yaml").read_text())
    assert cluster["kind"] == "Cluster" and cluster["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert cluster["networking"]["apiServerAddress"] == "127.0.0.1"
    makefile = (REPO / "Makefile").read_text()
    assert "kind-demo:" in makefile and "deploy/kind/quickstart.sh" in makefile


def test_the_secrets_the_manifests_read_are_the_ones_the_script_makes() -> None:
    script = (KIND / "quickstart.sh").read_text()
    made = set(re.findall(r"--from-literal=(\w+)=", script))
    reference = r"secretKeyRef: \{name: quickstart-secrets, key: (\w+)\}"
    read = {
        key
        for name in ("postgres.yaml", "minio.yaml")
        for key in re.findall(reference, (KIND / name).read_text())
    }
    assert read == made == {"POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "S3_SERVICE_SECRET"}


def test_the_helm_values_are_settings_the_service_loads_with_the_secrets_the_script_sets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = yaml.safe_load((KIND / "values.yaml").read_text())
    chart = yaml.safe_load((REPO / "deploy" / "helm" / "provider" / "values.yaml").read_text())

    def unknown(data: dict[str, Any], defaults: dict[str, Any], path: str = "") -> list[str]:
        """Keys of `data` the chart's values do not have (free-form maps, empty there, aside)."""
        found = []
        for key, value in data.items():
            if key not in defaults:
                found.append(path + key)
            elif isinstance(value, dict) and isinstance(defaults[key], dict) and defaults[key]:
                found += unknown(value, defaults[key], f"{path}{key}.")
        return found

    assert unknown({k: v for k, v in values.items() if k != "config"}, chart) == []
    script = (KIND / "quickstart.sh").read_text()
    secrets = set(re.findall(r"secret\.values\.(PROVIDER_\w+)=", script))
    assert secrets == {"PROVIDER_STORE__URL", "PROVIDER_STORAGE__S3__SECRET_ACCESS_KEY"}
    for name in list(os.environ):
        if name.startswith("PROVIDER_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv(
        "PROVIDER_STORE__URL", "postgresql+asyncpg://provider:x@postgres.provider.svc:5432/provider"
    )
    monkeypatch.setenv("PROVIDER_STORAGE__S3__SECRET_ACCESS_KEY", "y" * 48)
    config = dict(values["config"])
    settings = Settings(**config)
    assert settings.compute.backend == "kubernetes" and settings.storage.backend == "s3"
    assert settings.storage.s3.access_key_id == "provider"  # the MinIO user minio-setup makes


def test_the_images_built_and_loaded_are_the_ones_everything_names() -> None:
    script = (KIND / "quickstart.sh").read_text()
    values = yaml.safe_load((KIND / "values.yaml").read_text())
    service = f"{values['image']['repository']}:{values['image']['tag']}"
    sidecar = values["config"]["compute"]["kubernetes"]["sidecar_image"]
    assert values["image"]["tag"] == __version__
    assert 'service_image="ghcr.io/provider/provider:$version"' in script
    assert 'sidecar_image="ghcr.io/provider/provider-sidecar:$version"' in script
    assert service == f"ghcr.io/provider/provider:{__version__}"
    assert sidecar == f"ghcr.io/provider/provider-sidecar:{__version__}"
    assert 'kind load docker-image --name "$cluster" "$service_image" "$sidecar_image"' in script
    # The dummy asset's worker ships inside the service image: no third image.
    dummy = yaml.safe_load((REPO / "config" / "assets" / "dummy.yaml").read_text())
    assert dummy["image"] == service


def test_the_demo_the_quick_start_ends_with_runs_against_a_service(tmp_path: Path) -> None:
    with serve(tmp_path, assets={"directory": str(REPO / "config" / "assets")}) as url:
        done = subprocess.run(
            ["bash", str(KIND / "demo.sh"), url, ADMIN_KEY], capture_output=True, text=True, timeout=300
        )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "byte for byte" in done.stderr
