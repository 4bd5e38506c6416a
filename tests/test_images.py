"""The images build, and work: both Dockerfiles built with buildah on a stand-in for their base
image made from Debian packages (tests/services/image-base.sh; no registry is reachable here),
every RUN step run for real, then the service image runs the demo end to end as its own user and
the sidecar image runs the sidecar as its own."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from tests.conftest import REPO

BASE = "localhost/python-base:3.11"
ENV = {**os.environ, "STORAGE_DRIVER": "vfs", "BUILDAH_ISOLATION": "chroot"}


def buildah(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["buildah", *args], env=ENV, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def base() -> str:
    if os.environ.get("PROVIDER_TEST_IMAGES", "").lower() == "off":
        pytest.skip("PROVIDER_TEST_IMAGES=off")
    subprocess.run(
        ["bash", str(REPO / "tests" / "services" / "image-base.sh"), BASE], check=True, timeout=900
    )
    return BASE


def build(base: str, dockerfile: str) -> Iterator[str]:
    tag = f"localhost/provider-test-{uuid.uuid4().hex[:8]}"
    built = buildah(
        "bud",
        "--isolation",
        "chroot",
        "--network",
        "host",
        "--build-arg",
        f"PYTHON_IMAGE={base}",
        "-f",
        f"deploy/docker/{dockerfile}",
        "-t",
        tag,
        str(REPO),
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    try:
        yield tag
    finally:
        buildah("rmi", "-f", tag)


def run(image: str, *command: str, workdir: str = "/tmp") -> subprocess.CompletedProcess[str]:
    container = buildah("from", image).stdout.strip()
    try:
        return buildah(
            "run",
            "--isolation",
            "chroot",
            "--network",
            "host",
            "--workingdir",
            workdir,
            container,
            "--",
            *command,
        )
    finally:
        buildah("rm", container)


@pytest.fixture(scope="module")
def service_image(base: str) -> Iterator[str]:
    yield from build(base, "Dockerfile")


@pytest.fixture(scope="module")
def sidecar_image(base: str) -> Iterator[str]:
    yield from build(base, "Dockerfile.sidecar")


def test_the_service_image_runs_the_demo_end_to_end_as_its_own_user(service_image: str) -> None:
    assert run(service_image, "id", "-u").stdout.strip() == "10001"
    demo = run(service_image, "provider", "demo", "--folder", "/tmp/demo")
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "identical to the input" in demo.stdout
    # The bundled assets are where assets.directory looks by default, and load.
    checked = run(service_image, "provider", "assets", "validate", "config/assets/dummy.yaml", workdir="/app")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_sidecar_image_runs_the_sidecar_and_holds_nothing_else(sidecar_image: str) -> None:
    assert run(sidecar_image, "id", "-u").stdout.strip() == "65532"
    usage = run(sidecar_image, "python", "-m", "provider.sidecar", "--help")
    assert usage.returncode == 0 and "stage-in" in usage.stdout
    service = run(sidecar_image, "python", "-c", "import provider.app")
    assert service.returncode != 0 and "ModuleNotFoundError" in service.stderr


def test_the_release_workflow_builds_both_images_for_two_platforms_pinned_with_sboms() -> None:
    import yaml

    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "release.yml").read_text())
    steps = workflow["jobs"]["images"]["steps"]
    builds = [s["with"] for s in steps if str(s.get("uses", "")).startswith("docker/build-push-action")]
    assert {b["file"] for b in builds} == {"deploy/docker/Dockerfile", "deploy/docker/Dockerfile.sidecar"}
    for options in builds:
        assert set(options["platforms"].split(",")) == {"linux/amd64", "linux/arm64"}
        assert options["sbom"] is True and options["provenance"] == "mode=max"
        # The base image by digest, resolved from the registry when the release is built.
        assert options["build-args"] == "PYTHON_IMAGE=${{ steps.base.outputs.image }}"
    base = next(s for s in steps if s.get("id") == "base")
    assert "imagetools inspect" in base["run"] and "@$digest" in base["run"]
    chart = "\n".join(s.get("run", "") for s in workflow["jobs"]["chart"]["steps"])
    assert 'digest: \\"$SERVICE_DIGEST\\"' in chart and "$SIDECAR_IMAGE@$SIDECAR_DIGEST" in chart
    assert "kustomize edit set image" in chart
    assert workflow["jobs"]["test"]["steps"][-1]["run"].endswith(".ci/run")
    # The test services install themselves as root, from Debian packages.
    assert workflow["jobs"]["test"]["container"]["image"].startswith("debian:")
    # The chart takes the digest the workflow writes; the values it edits are there to edit.
    values = (REPO / "deploy" / "helm" / "provider" / "values.yaml").read_text()
    assert '  digest: ""' in values and "  repository: ghcr.io/provider/provider\n" in values
    template = (REPO / "deploy" / "helm" / "provider" / "templates" / "deployment.yaml").read_text()
    assert '"{{ .Values.image.repository }}@{{ .Values.image.digest }}"' in template
    for dockerfile in ("Dockerfile", "Dockerfile.sidecar"):
        assert "ARG PYTHON_IMAGE=python:3.11-slim" in (REPO / "deploy" / "docker" / dockerfile).read_text()
