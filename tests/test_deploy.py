"""Deployment files: the Dockerfiles, docker-compose.yml, the kustomize base and the Helm chart.

Static checks only (no Docker, no cluster, no network): manifests validate against the Kubernetes
1.34 schemas, the RBAC is exactly what the Kubernetes compute backend needs, and every setting that
any of these files passes (PROVIDER_* variables and provider.yaml keys) exists in
provider.config.Settings and loads through the real settings loader.
"""

from __future__ import annotations

import ast
import fnmatch
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic import BaseModel

import provider
from provider.config import ENV_CONFIG_PATH, ConfigError, S3StorageSettings, Settings, load_settings

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
KUSTOMIZE = DEPLOY / "kubernetes"
CHART = DEPLOY / "helm" / "provider"
DOCKER = DEPLOY / "docker"
COMPOSE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
DOCS = REPO / "docs" / "deploy.md"
KUBERNETES_VERSION = "1.34"

# Files of the kustomize base that kustomization.yaml leaves out on purpose (documented there and
# in docs/deploy.md).
OPTIONAL_MANIFESTS = {"secret.example.yaml"}
# What the Kubernetes compute backend does, and nothing more: (apiGroup, resource) -> verbs.
ROLE_RULES = {
    ("batch", "jobs"): {"create", "list", "watch", "delete"},
    ("", "pods"): {"list", "watch"},
    ("", "events"): {"list", "watch"},
    ("", "pods/log"): {"get"},
    ("", "secrets"): {"create", "patch", "delete"},
    ("coordination.k8s.io", "leases"): {"get", "create", "update"},
}
JOB_POD_LABELS = {"app.kubernetes.io/managed-by": "provider", "app.kubernetes.io/component": "execution"}
# PROVIDER_* variables that are not settings: the configuration file's path.
NOT_SETTINGS = {ENV_CONFIG_PATH}


# --- PROVIDER_* variables and provider.yaml keys against the Settings model ------------------


def _submodel(annotation: Any) -> tuple[str, type[BaseModel]] | None:
    """("model", M) for a section, ("mapping", M) for dict[str, M]; None for a plain value."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "model", annotation
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is dict and len(args) == 2:
        inner = _submodel(args[1])
        return ("mapping", inner[1]) if inner else None
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            inner = _submodel(arg)
            if inner:
                return inner
    return None


def _field(model: type[BaseModel], name: str, *, ignore_case: bool) -> tuple[str, Any] | None:
    for candidate, info in model.model_fields.items():
        if candidate == name or (ignore_case and candidate.lower() == name.lower()):
            return candidate, info.annotation
    return None


def setting_of_env(name: str) -> str:
    """The dotted setting that `PROVIDER_A__B__C` sets (names compared case-insensitively, as
    pydantic-settings does); LookupError naming the variable when there is none."""
    if not name.startswith("PROVIDER_"):
        raise LookupError(f"{name}: not a PROVIDER_ variable")
    parts = name[len("PROVIDER_") :].split("__")
    model: type[BaseModel] = Settings
    path: list[str] = []
    index = 0
    while index < len(parts):
        found = _field(model, parts[index], ignore_case=True) if parts[index] else None
        if found is None:
            where = ".".join(path) or "the top level"
            raise LookupError(f"{name}: {parts[index].lower()!r} is not a setting under {where}")
        path.append(found[0])
        index += 1
        if index == len(parts):
            break
        sub = _submodel(found[1])
        if sub is None:
            raise LookupError(f"{name}: {'.'.join(path)} is a value, it has no {parts[index].lower()!r}")
        kind, model = sub
        if kind == "mapping":  # e.g. edc.connectors.<name>.secret
            path.append(parts[index].lower())
            index += 1
    return ".".join(path)


def unknown_keys(data: Any, model: type[BaseModel] = Settings, prefix: str = "") -> list[str]:
    """Dotted keys of a provider.yaml mapping that are not settings (exact names, as in YAML)."""
    if not isinstance(data, dict):
        return [f"{prefix or '(root)'}: not a mapping"]
    problems = []
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        found = _field(model, str(key), ignore_case=False)
        if found is None:
            problems.append(dotted)
            continue
        sub = _submodel(found[1])
        if sub is None or not isinstance(value, dict):
            continue
        kind, inner = sub
        if kind == "model":
            problems += unknown_keys(value, inner, dotted + ".")
        else:
            for name, item in value.items():
                problems += unknown_keys(item, inner, f"{dotted}.{name}.")
    return problems


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("PROVIDER_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no config/provider.yaml of the working tree
    return monkeypatch


def load_with(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, config: dict[str, Any] | None, env: dict[str, str]
) -> Settings:
    """Settings as the service would load them: provider.yaml (if any) plus the environment."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    path = None
    if config is not None:
        path = tmp_path / "provider.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return load_settings(path)


def test_env_resolver_accepts_settings_and_names_unknown_variables() -> None:
    assert setting_of_env("PROVIDER_STORE__URL") == "store.url"
    assert setting_of_env("PROVIDER_STORAGE__S3__STS__ROLE_ARN") == "storage.s3.sts.role_arn"
    assert setting_of_env("PROVIDER_COMPUTE__KUBERNETES__NAMESPACE") == "compute.kubernetes.namespace"
    assert setting_of_env("PROVIDER_DATA_DIR") == "data_dir"
    assert setting_of_env("PROVIDER_EDC__CONNECTORS__MAIN__SECRET") == "edc.connectors.main.secret"
    for wrong in (
        "PROVIDER_STORAGE__S3__ENDPOINT",
        "PROVIDER_NOPE",
        "PROVIDER_STORE__URL__X",
        "PROVIDER_STORE_URL",
        "PROVIDER_COMPUTE____BACKEND",
    ):
        with pytest.raises(LookupError, match=wrong):
            setting_of_env(wrong)
    assert unknown_keys(
        {"server": {"port": 1, "prot": 2}, "nope": {}, "edc": {"connectors": {"a": {"x": 1}}}}
    ) == [
        "server.prot",
        "nope",
        "edc.connectors.a.x",
    ]


# --- the kustomize base --------------------------------------------------------------------


def yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def kustomization() -> dict[str, Any]:
    return yaml_documents(KUSTOMIZE / "kustomization.yaml")[0]


def manifests() -> list[tuple[str, dict[str, Any]]]:
    return [
        (path.name, doc)
        for path in sorted(KUSTOMIZE.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in yaml_documents(path)
    ]


def the(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        doc
        for _, doc in manifests()
        if doc["kind"] == kind and (name is None or doc["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''} in {KUSTOMIZE}, found {len(found)}"
    return found[0]


def provider_yaml() -> dict[str, Any]:
    return yaml.safe_load(the("ConfigMap")["data"]["provider.yaml"])


def secret_env() -> dict[str, str]:
    return {key: str(value) for key, value in the("Secret")["stringData"].items()}


def filled_secret_env() -> dict[str, str]:
    """secret.example.yaml as an operator fills it in: every REPLACE-ME... value made random."""
    return {
        key: re.sub(r"REPLACE-ME[\w-]*", lambda _: secrets.token_hex(16), value)
        for key, value in secret_env().items()
    }


def container() -> dict[str, Any]:
    containers = the("Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def validation_problem(document: dict[str, Any]) -> str | None:
    """None when the object validates strictly against the Kubernetes schema, else the problem."""
    try:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(map(str, exc.path))
        return f"{document['kind']}/{document['metadata']['name']} {where}: {exc.message}"
    return None


@pytest.mark.parametrize(
    "name, document",
    manifests(),
    ids=[f"{name}:{doc['kind']}/{doc['metadata']['name']}" for name, doc in manifests()],
)
def test_manifest_validates_strictly_against_kubernetes(name: str, document: dict[str, Any]) -> None:
    problem = validation_problem(document)
    assert problem is None, f"{name}: {problem}"


def test_kustomization_lists_existing_files_and_every_file_is_listed_or_optional() -> None:
    base = kustomization()
    assert base["apiVersion"] == "kustomize.config.k8s.io/v1beta1" and base["kind"] == "Kustomization"
    listed = base["resources"]
    assert len(listed) == len(set(listed)), "a resource is listed twice"
    missing = [name for name in listed if not (KUSTOMIZE / name).is_file()]
    assert not missing, f"kustomization.yaml lists files that do not exist: {missing}"
    present = {path.name for path in KUSTOMIZE.glob("*.yaml")} - {"kustomization.yaml"}
    unaccounted = present - set(listed) - OPTIONAL_MANIFESTS
    assert not unaccounted, f"neither listed in kustomization.yaml nor optional: {sorted(unaccounted)}"
    assert not OPTIONAL_MANIFESTS & set(listed), "an optional manifest is listed as a resource"
    text = (KUSTOMIZE / "kustomization.yaml").read_text(encoding="utf-8")
    comments = "\n".join(line for line in text.splitlines() if line.lstrip().startswith("#"))
    docs = DOCS.read_text(encoding="utf-8")
    for name in OPTIONAL_MANIFESTS:
        assert (KUSTOMIZE / name).is_file(), f"{name} is declared optional but does not exist"
        assert name in comments, f"kustomization.yaml does not explain why {name} is not listed"
        assert name in docs, f"docs/deploy.md does not mention {name}"


def test_everything_lives_in_the_kustomization_namespace_jobs_included() -> None:
    namespace = kustomization()["namespace"]
    assert the("Namespace")["metadata"]["name"] == namespace
    for name, doc in manifests():
        assert doc["metadata"].get("namespace", namespace) == namespace, f"{name}: another namespace"
    # The jobs go to the pod's own namespace (downward API), so they follow the kustomization's.
    env = {item["name"]: item for item in container()["env"]}
    job_namespace = env["PROVIDER_COMPUTE__KUBERNETES__NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert job_namespace == "metadata.namespace"
    assert "namespace" not in provider_yaml()["compute"]["kubernetes"]
    # No namespace on the subject: kustomize sets the ServiceAccount's (see the overlay test).
    assert the("RoleBinding")["subjects"] == [
        {"kind": "ServiceAccount", "name": the("ServiceAccount")["metadata"]["name"]}
    ]


def role_rules(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert set(rule) <= {"apiGroups", "resources", "verbs"}, f"unexpected rule fields: {rule}"
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                verbs = set(rule["verbs"])
                assert "*" not in verbs and resource != "*" and group != "*", f"wildcard in {rule}"
                granted.setdefault((group, resource), set()).update(verbs)
    return granted


def test_role_grants_exactly_what_the_kubernetes_backend_needs() -> None:
    role = the("Role")
    assert role_rules(role) == ROLE_RULES
    binding = the("RoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }


def test_no_cluster_wide_rbac_anywhere_in_deploy() -> None:
    offenders = []
    for path in sorted(DEPLOY.rglob("*")):
        if path.is_file() and path.suffix in (".yaml", ".yml", ".tpl"):
            text = path.read_text(encoding="utf-8")
            if re.search(r"^\s*kind:\s*[\"']?Cluster(Role|RoleBinding)\b", text, re.MULTILINE):
                offenders.append(str(path.relative_to(REPO)))
    assert not offenders, f"ClusterRole or ClusterRoleBinding in {offenders}"


def test_deployment_runs_two_non_root_replicas_with_probes_and_writable_volumes() -> None:
    deployment = the("Deployment")
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["replicas"] == 2
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    assert pod["serviceAccountName"] == the("ServiceAccount")["metadata"]["name"]
    main = container()
    config = provider_yaml()
    port = {item["name"]: item["containerPort"] for item in main["ports"]}["http"]
    assert port == config["server"]["port"] == 8080 and config["server"]["host"] == "0.0.0.0"
    assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert main["resources"]["requests"] and main["resources"]["limits"]

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == dockerfile_uid(DOCKER / "Dockerfile")
    security = main["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["mountPath"]: mount["name"] for mount in main["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert "emptyDir" in volumes[mounts[config["data_dir"]]], "data_dir is not a writable volume"

    env = {item["name"]: item for item in main["env"]}
    identity = env["PROVIDER_COMPUTE__KUBERNETES__IDENTITY"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert identity == "metadata.name"
    config_file = Path(env[ENV_CONFIG_PATH]["value"])
    config_volume = volumes[mounts[str(config_file.parent)]]
    assert config_volume["configMap"]["name"] == the("ConfigMap")["metadata"]["name"]
    assert config_file.name in the("ConfigMap")["data"]
    assert [source["secretRef"]["name"] for source in main["envFrom"]] == [the("Secret")["metadata"]["name"]]
    for name in env:
        if name not in NOT_SETTINGS:
            setting_of_env(name)


def test_service_reaches_the_deployment_pods() -> None:
    service = the("Service")
    labels = the("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    named_ports = {item["name"] for item in container()["ports"]}
    assert all(port["targetPort"] in named_ports for port in service["spec"]["ports"])


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


def test_job_network_policy_allows_only_dns_storage_and_the_service() -> None:
    policy = the("NetworkPolicy")["spec"]
    assert policy["podSelector"] == {"matchLabels": JOB_POD_LABELS}
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    assert not policy.get("ingress"), "job pods accept no connections"
    service_pods = the("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert not selects(JOB_POD_LABELS, service_pods), "the service pods would be locked down as jobs"
    allowed = set()
    for rule in policy["egress"]:
        for port in rule["ports"]:
            allowed.add((port.get("protocol", "TCP"), port["port"]))
        for peer in rule["to"]:
            assert "0.0.0.0/0" not in peer.get("ipBlock", {}).get("cidr", ""), "egress to anywhere"
    assert allowed == {("UDP", 53), ("TCP", 53), ("TCP", 443), ("TCP", 8080)}
    to_service = [rule for rule in policy["egress"] if {"port": 8080, "protocol": "TCP"} in rule["ports"]]
    assert len(to_service) == 1
    assert all(selects(peer["podSelector"]["matchLabels"], service_pods) for peer in to_service[0]["to"])


def test_configmap_keys_are_settings_and_load_with_the_secret(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = provider_yaml()
    assert unknown_keys(config) == []
    filled = filled_secret_env()
    for name in filled:
        setting_of_env(name)
    env = {
        **filled,
        "PROVIDER_COMPUTE__KUBERNETES__IDENTITY": "provider-5d9c7b-x2x7q",
        "PROVIDER_COMPUTE__KUBERNETES__NAMESPACE": "provider",
    }
    settings = load_with(clean_env, tmp_path, config, env)
    assert settings.compute.backend == "kubernetes" and settings.storage.backend == "s3"
    assert settings.store.url is not None and settings.store.url.startswith("postgresql+asyncpg://")
    assert settings.storage.s3.sts.role_arn and settings.storage.s3.access_key_id
    assert settings.tokens.signing_keys, "two replicas must share token signing keys"
    assert settings.compute.kubernetes.identity == "provider-5d9c7b-x2x7q"
    assert settings.compute.kubernetes.namespace == "provider"
    assert settings.compute.kubernetes.sidecar_image


def test_secret_template_holds_placeholders_only() -> None:
    for name, value in secret_env().items():
        assert "REPLACE-ME" in value, f"{name} in secret.example.yaml is not an obvious placeholder"


def test_secret_template_left_unfilled_stops_the_service_naming_each_secret(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as refused:
        load_with(clean_env, tmp_path, provider_yaml(), secret_env())
    message = str(refused.value)
    for key in (
        "store.url",
        "auth.bootstrap_admin_key",
        "tokens.signing_keys.0.secret",
        "storage.s3.secret_access_key",
    ):
        assert f"  {key}: Value error, " in message and "placeholder" in message, message
    assert "REPLACE-ME" not in message


def kustomize_build(directory: Path) -> list[dict[str, Any]]:
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(directory)], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_build_renders_valid_objects() -> None:
    documents = kustomize_build(KUSTOMIZE)
    kinds = sorted(doc["kind"] for doc in documents)
    assert kinds == sorted(doc["kind"] for name, doc in manifests() if name not in OPTIONAL_MANIFESTS)
    for doc in documents:
        assert validation_problem(doc) is None, validation_problem(doc)
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == kustomization()["namespace"]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_an_overlay_in_another_namespace_takes_the_role_binding_subject_and_the_jobs_along(
    tmp_path: Path,
) -> None:
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": "data-space",
        "resources": [os.path.relpath(KUSTOMIZE, overlay)],  # kustomize takes relative paths only
    }
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization), encoding="utf-8")
    rendered = {doc["kind"]: doc for doc in kustomize_build(overlay)}
    account = rendered["ServiceAccount"]["metadata"]
    assert account["namespace"] == "data-space"
    binding = rendered["RoleBinding"]
    assert binding["metadata"]["namespace"] == rendered["Role"]["metadata"]["namespace"] == "data-space"
    # Bound to the service's account where it now lives, not where the base put it.
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["name"], "namespace": "data-space"}
    ]
    pod = rendered["Deployment"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["name"]
    env = {item["name"]: item for item in pod["containers"][0]["env"]}
    job_namespace = env["PROVIDER_COMPUTE__KUBERNETES__NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert job_namespace == "metadata.namespace"  # the jobs follow, into the Role's namespace


# --- Dockerfiles ---------------------------------------------------------------------------


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for instruction, args in self.instructions if instruction == keyword]

    def last(self, keyword: str) -> str | None:
        found = self.all(keyword)
        return found[-1] if found else None


def parse_dockerfile(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, each a list of (INSTRUCTION, arguments)."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, f"{path.name}: the last instruction ends with a line continuation"
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            words = rest.split()
            image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(image, name))
        elif not stages:
            assert keyword == "ARG", f"{path.name}: {keyword} before the first FROM"
            name, _, default = rest.partition("=")
            args[name] = default
        else:
            stages[-1].instructions.append((keyword, rest))
    return args, stages


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"not in exec form: {args}"
    return value


def env_of(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in stage.all("ENV"):
        for item in shlex.split(args):
            name, _, value = item.partition("=")
            env[name] = value
    return env


def dockerfile_uid(path: Path) -> int:
    user = parse_dockerfile(path)[1][-1].last("USER")
    assert user is not None, f"{path.name}: no USER in the final stage"
    return int(user.split(":")[0])


def dockerignore_patterns() -> list[str]:
    lines = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [line.strip().rstrip("/") for line in lines if line.strip() and not line.startswith("#")]


def ignored(relative: str, patterns: list[str]) -> bool:
    parts = Path(relative).parts
    candidates = ["/".join(parts[: index + 1]) for index in range(len(parts))]
    for pattern in patterns:
        assert not pattern.startswith("!"), "exceptions in .dockerignore are not handled here"
        for candidate in candidates:
            if fnmatch.fnmatchcase(candidate, pattern) or (
                pattern.startswith("**/") and fnmatch.fnmatchcase(candidate.split("/")[-1], pattern[3:])
            ):
                return True
    return False


def copied_sources(stage: Stage) -> list[str]:
    sources = []
    for args in stage.all("COPY"):
        words = [word for word in shlex.split(args) if not word.startswith("--")]
        if not re.search(r"(^|\s)--from=", args):
            sources += words[:-1]
    return sources


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.sidecar"])
def test_dockerfile_copies_existing_files_the_build_context_keeps(name: str) -> None:
    _, stages = parse_dockerfile(DOCKER / name)
    patterns = dockerignore_patterns()
    for stage in stages:
        for source in copied_sources(stage):
            assert (REPO / source).exists(), f"{name}: COPY {source}: no such file"
            assert not ignored(source.rstrip("/"), patterns), f"{name}: .dockerignore excludes {source}"


def test_dockerignore_matcher_can_tell() -> None:
    patterns = ["tests", "**/__pycache__", "config/provider.yaml"]
    assert ignored("tests/test_deploy.py", patterns)
    assert ignored("provider/sidecar/__pycache__", patterns)
    assert ignored("config/provider.yaml", patterns)
    assert not ignored("config/assets", patterns) and not ignored("provider/sidecar", patterns)


def test_service_dockerfile() -> None:
    _, stages = parse_dockerfile(DOCKER / "Dockerfile")
    assert len(stages) >= 2, "multi-stage: build, then a runtime without build leftovers"
    final = stages[-1]
    assert all(stage.base.startswith("python:3.11-slim") for stage in stages), [s.base for s in stages]
    user = final.last("USER")
    assert user is not None and user.split(":")[0] == "10001"
    assert any(
        "pip install -c requirements.lock '.[s3,kubernetes,tracing]'" in run
        for s in stages
        for run in s.all("RUN")
    )
    entry = exec_form(final.last("ENTRYPOINT") or "[]") + exec_form(final.last("CMD") or "[]")
    assert entry == ["provider", "serve"]
    assert "8080" in (final.last("EXPOSE") or "").split()
    env = env_of(final)
    assert env["PROVIDER_SERVER__HOST"] == "0.0.0.0"
    for name in env:
        if name.startswith("PROVIDER_"):
            setting_of_env(name)
    workdir = final.last("WORKDIR")
    assert workdir is not None
    data_dir = str(Path(workdir) / Settings.model_fields["data_dir"].default)
    assert data_dir in exec_form(final.last("VOLUME") or "[]"), "the data directory is not a volume"
    assert "config/assets/" in copied_sources(final)
    assert "/healthz" in (final.last("HEALTHCHECK") or "")


def imports_of(package: Path) -> set[str]:
    names = set()
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
    return names


def test_sidecar_dockerfile_holds_only_what_the_sidecar_imports() -> None:
    _, stages = parse_dockerfile(DOCKER / "Dockerfile.sidecar")
    final = stages[-1]
    assert all(stage.base.startswith("python:3.11-slim") for stage in stages)
    assert dockerfile_uid(DOCKER / "Dockerfile.sidecar") == 65532
    assert exec_form(final.last("ENTRYPOINT") or "[]") == ["python", "-m", "provider.sidecar"]
    sources = {source for stage in stages for source in copied_sources(stage)}
    assert sources == {"requirements.lock", "provider/__init__.py", "provider/aio.py", "provider/sidecar/"}
    installs = [run for stage in stages for run in stage.all("RUN") if "pip install" in run]
    assert len(installs) == 1 and re.search(
        r"pip install -c \S*requirements.lock aioboto3(\s|$)", installs[0]
    )
    # aioboto3 brings botocore and boto3; everything else must be the standard library.
    third_party = {"aioboto3", "botocore", "boto3"}
    for module in imports_of(REPO / "provider" / "sidecar"):
        top = module.split(".")[0]
        if top == "provider":
            in_image = module.startswith("provider.sidecar") or module == "provider.aio"
            assert in_image, f"the sidecar imports {module}, not in its image"
        else:
            assert top in sys.stdlib_module_names or top in third_party, f"the sidecar imports {module}"


# --- docker-compose.yml --------------------------------------------------------------------


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def dotenv_example() -> dict[str, str]:
    """The variables of .env.example and their values."""
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    pairs = [line.split("=", 1) for line in lines if line.strip() and not line.startswith("#")]
    return {name.strip(): value.strip() for name, value in pairs}


# .env as docker-compose.yml and .env.example tell the operator to create it: random values.
DOTENV = {name: secrets.token_hex(16) for name in dotenv_example()}


def interpolated(value: Any, variables: dict[str, str]) -> str:
    """Compose's interpolation with `variables` as the only ones set: ${VAR}, ${VAR:-default},
    ${VAR:?error} (LookupError when VAR is unset or empty, as compose refuses), and $$ as $."""

    def substitute(match: re.Match[str]) -> str:
        name, operator, argument = match.groups()
        found = variables.get(name, "")
        if operator == ":?" and not found:
            raise LookupError(f"{name} is required: {argument}")
        if operator in (":-", "-") and not found:
            return argument
        return found

    text = re.sub(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}", substitute, str(value))
    return text.replace("$$", "$")


def environment(service: dict[str, Any], variables: dict[str, str] = DOTENV) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {name: interpolated(value, variables) for name, value in env.items()}


def test_compose_services_and_start_order() -> None:
    services = compose()["services"]
    assert {"provider", "postgres", "minio", "s3-init"} <= set(services)
    app = services["provider"]
    assert app["build"]["dockerfile"] == "deploy/docker/Dockerfile"
    assert (REPO / app["build"].get("context", ".") / app["build"]["dockerfile"]).is_file()
    assert app["depends_on"]["s3-init"] == {"condition": "service_completed_successfully"}
    assert app["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["minio"]["image"].startswith("minio/minio")
    assert services["s3-init"]["image"].startswith("minio/mc")
    for name in ("postgres", "minio"):
        assert services[name]["healthcheck"]["test"], f"{name} has no healthcheck"
    for service in services.values():
        if "build" in service:
            assert (REPO / service["build"].get("context", ".") / service["build"]["dockerfile"]).is_file()


def test_compose_minio_setup_follows_docs_storage() -> None:
    services = compose()["services"]
    script = "\n".join(services["s3-init"]["command"])
    env = environment(services["provider"])
    init_env = environment(services["s3-init"])
    found = re.search(r"'(\{.*\})'", script)
    assert found, "s3-init writes no policy document"
    policy = json.loads(found.group(1))
    prefix = "provider-"
    assert policy["Statement"] == [
        {
            "Effect": "Allow",
            "Action": ["s3:*"],
            "Resource": [f"arn:aws:s3:::{prefix}*", f"arn:aws:s3:::{prefix}*/*"],
        }
    ]
    assert S3StorageSettings.model_fields["bucket_prefix"].default == prefix
    assert "mc admin user add" in script and "mc admin policy attach" in script
    # The provider uses the user that s3-init creates, never MinIO's root user.
    assert env["PROVIDER_STORAGE__S3__ACCESS_KEY_ID"] == init_env["S3_SERVICE_USER"]
    assert env["PROVIDER_STORAGE__S3__SECRET_ACCESS_KEY"] == init_env["S3_SERVICE_SECRET"]
    assert env["PROVIDER_STORAGE__S3__ACCESS_KEY_ID"] != init_env["MINIO_ROOT_USER"]
    assert env["PROVIDER_STORAGE__S3__ENDPOINT_URL"] == "http://minio:9000"


def test_compose_provider_variables_are_settings_and_load(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    services = compose()["services"]
    env = environment(services["provider"])
    for name in env:
        assert name.startswith("PROVIDER_"), f"{name}: settings are passed as PROVIDER_* variables"
        setting_of_env(name)
    # The commented alternatives (Kubernetes compute) must name real settings too; names inside
    # ${...} are compose's own variables.
    text = COMPOSE.read_text(encoding="utf-8")
    compose_variables = set(re.findall(r"\$\{(\w+)", text))
    for name in set(re.findall(r"\bPROVIDER_[A-Z0-9_]+", text)) - compose_variables - NOT_SETTINGS:
        setting_of_env(name)
    for name, service in services.items():
        if name != "provider":
            assert not [key for key in environment(service) if key.startswith("PROVIDER_")], name
    settings = load_with(clean_env, tmp_path, None, env)
    assert settings.compute.backend == "local" and settings.storage.backend == "s3"
    assert settings.store.url is not None and "@postgres:5432/" in settings.store.url
    assert settings.auth.bootstrap_admin_key is not None
    assert settings.auth.bootstrap_admin_key.get_secret_value() == DOTENV["PROVIDER_ADMIN_KEY"]


def test_compose_has_no_default_secrets_and_refuses_to_start_without_dotenv() -> None:
    example = dotenv_example()
    assert example and not any(example.values()), ".env.example must not hold values"
    text = COMPOSE.read_text(encoding="utf-8")
    required = set(re.findall(r"\$\{(\w+):\?[^}]+\}", text))
    assert required == set(example), "the required variables are exactly those of .env.example"
    defaulted = set(re.findall(r"\$\{(\w+):?-", text))
    assert not [name for name in defaulted if re.search("PASSWORD|SECRET|KEY|TOKEN", name)], defaulted
    for service in compose()["services"].values():
        uses = {found for found in re.findall(r"\$\{(\w+)", json.dumps(service)) if found in required}
        if uses:
            with pytest.raises(LookupError):
                environment(service, {})  # without .env
            assert environment(service)  # with it
    ignored_by_git = (REPO / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert "/.env" in ignored_by_git or ".env" in ignored_by_git
    assert ignored(".env", dockerignore_patterns()), "the build context would carry .env"


def test_compose_publishes_ports_on_loopback_only() -> None:
    published = {
        name: [str(port) for port in service.get("ports", [])]
        for name, service in compose()["services"].items()
    }
    assert published["provider"] == ["127.0.0.1:8080:8080"]
    for name, ports in published.items():
        for port in ports:
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


# --- the Helm chart ------------------------------------------------------------------------


def chart_values() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))


def templates() -> dict[str, str]:
    return {
        path.name: path.read_text(encoding="utf-8")
        for path in sorted((CHART / "templates").iterdir())
        if path.is_file()
    }


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    assert chart["apiVersion"] == "v2" and chart["name"] == "provider" and chart["type"] == "application"
    assert re.fullmatch(r"\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?", chart["version"])
    assert chart["appVersion"] == provider.__version__
    assert {"NOTES.txt", "_helpers.tpl"} <= set(templates())


def values_paths(text: str) -> set[str]:
    return set(re.findall(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)", text))


def test_every_values_path_in_the_templates_exists_and_every_value_is_used() -> None:
    values = chart_values()
    used_top = set()
    missing = []
    for name, text in templates().items():
        for path in values_paths(text):
            node: Any = values
            for key in path.strip(".").split("."):
                if not isinstance(node, dict) or key not in node:
                    missing.append(f"{name}: .Values{path}")
                    break
                node = node[key]
            used_top.add(path.strip(".").split(".")[0])
    assert not missing, f"templates use values that values.yaml does not define: {sorted(missing)}"
    unused = set(values) - used_top
    assert not unused, f"values.yaml defines values no template uses: {sorted(unused)}"


def test_values_path_finder_sees_nested_references() -> None:
    found = values_paths("{{ .Values.a.b_c | default $.Values.d }} {{- with .Values.e.f }}")
    assert found == {".a.b_c", ".d", ".e.f"}


def test_chart_templates_are_well_formed() -> None:
    sources = templates()
    defined = set(re.findall(r'define\s+"([^"]+)"', sources["_helpers.tpl"]))
    for name, text in sources.items():
        assert text.count("{{") == text.count("}}"), f"{name}: unbalanced template delimiters"
        opened = len(re.findall(r"{{-?\s*(if|range|with|define)\b", text))
        closed = len(re.findall(r"{{-?\s*end\b", text))
        assert opened == closed, f"{name}: {opened} blocks opened, {closed} closed"
        for used in re.findall(r'include\s+"([^"]+)"', text):
            assert used in defined, f"{name}: include of undefined template {used!r}"
    kinds = {
        match for text in sources.values() for match in re.findall(r"^kind:\s*(\w+)", text, re.MULTILINE)
    }
    assert kinds == {
        "Deployment",
        "Service",
        "ConfigMap",
        "Secret",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "ServiceMonitor",
        "PrometheusRule",
    }


def test_chart_disruption_budget_and_service_monitor_reach_the_service_pods() -> None:
    budget = without_templating(templates()["poddisruptionbudget.yaml"])
    budget["metadata"] = {"name": "provider", "namespace": "provider"}
    budget["spec"]["maxUnavailable"] = chart_values()["podDisruptionBudget"]["maxUnavailable"]
    budget["spec"]["selector"]["matchLabels"] = {"app.kubernetes.io/name": "provider"}
    assert validation_problem(budget) is None
    assert chart_values()["replicaCount"] > budget["spec"]["maxUnavailable"]  # a drain leaves one up
    monitor = without_templating(templates()["servicemonitor.yaml"])
    service = without_templating(templates()["service.yaml"])
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"] == "http"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert 'include "provider.selectorLabels"' in templates()["servicemonitor.yaml"]
    rule = templates()["prometheusrule.yaml"]
    assert '.Files.Get "files/alerts.yaml"' in rule and (CHART / "files" / "alerts.yaml").is_file()


def without_templating(text: str) -> Any:
    """A template as YAML: template-only lines dropped, inline actions replaced by a word."""
    lines = [line for line in text.splitlines() if not re.fullmatch(r"\s*{{.*}}\s*", line)]
    return yaml.safe_load(re.sub(r"{{.*?}}", "TEMPLATED", "\n".join(lines)))


def test_chart_role_matches_the_kustomize_role() -> None:
    role = without_templating(templates()["role.yaml"])
    assert role["kind"] == "Role" and role_rules(role) == ROLE_RULES
    policy = without_templating(templates()["networkpolicy-jobs.yaml"])
    assert policy["spec"]["podSelector"] == {"matchLabels": JOB_POD_LABELS}
    assert not policy["spec"]["ingress"]


def test_chart_binds_the_service_account_in_the_release_namespace() -> None:
    account = templates()["serviceaccount.yaml"]
    binding = templates()["rolebinding.yaml"]
    subjects = binding[binding.index("subjects:") :]
    assert "namespace: {{ .Release.Namespace }}" in account
    assert 'name: {{ include "provider.serviceAccountName" . }}' in subjects
    assert "namespace: {{ .Release.Namespace }}" in subjects


def test_chart_labels_never_mark_service_pods_as_jobs() -> None:
    helpers = templates()["_helpers.tpl"]
    assert "app.kubernetes.io/managed-by: {{ .Release.Service }}" in helpers
    assert "app.kubernetes.io/managed-by: provider" not in helpers


def test_chart_config_keys_are_settings_and_load(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = chart_values()["config"]
    assert unknown_keys(config) == []
    # As the chart renders it: the release namespace and service URL filled in.
    config["compute"]["kubernetes"].setdefault("namespace", "provider")
    config["compute"].setdefault("api_url", "http://provider.provider.svc.cluster.local:8080")
    settings = load_with(clean_env, tmp_path, config, filled_secret_env())
    assert settings.compute.backend == "kubernetes" and settings.storage.backend == "s3"
    assert chart_values()["secret"]["existingSecret"] == the("Secret")["metadata"]["name"]
    for name in chart_values()["secret"]["values"]:
        setting_of_env(name)


def test_chart_generates_the_service_secrets_it_creates_and_keeps_them(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """helm is not needed: the template is read, and what it generates is loaded as settings."""
    assert chart_values()["secret"]["values"] == {}, "the chart ships no secret values"
    template = templates()["secret.yaml"]
    assert re.search(r'lookup "v1" "Secret" \.Release\.Namespace', template), "not kept on upgrades"
    lengths = [int(n) for n in re.findall(r"randAlphaNum (\d+)", template)]
    assert len(lengths) == 2 and min(lengths) >= 32
    for name in ("PROVIDER_AUTH__BOOTSTRAP_ADMIN_KEY", "PROVIDER_TOKENS__SIGNING_KEYS"):
        assert f'if not (get $values "{name}")' in template, f"{name} is not generated when unset"
        assert f'get $current "{name}" | b64dec' in template, f"{name} is not kept on upgrades"
        assert f'set $values "{name}"' in template
    found = re.search(r"\(dict ((?:\"\w+\" )+)\(randAlphaNum (\d+)\)\)", template)
    assert found, "the generated signing key is not a dict ending with its secret"
    words = json.loads("[" + found.group(1).strip().replace('" "', '", "') + "]")
    values = [*words[1::2], secrets.token_urlsafe(48)[: int(found.group(2))]]
    signing_key = dict(zip(words[::2], values, strict=True))
    generated = {
        "PROVIDER_AUTH__BOOTSTRAP_ADMIN_KEY": secrets.token_urlsafe(48)[: lengths[0]],
        "PROVIDER_TOKENS__SIGNING_KEYS": json.dumps([signing_key]),
    }
    settings = load_with(clean_env, tmp_path, None, generated)
    assert settings.tokens.signing_keys[0].algorithm == "HS256"
    assert settings.auth.bootstrap_admin_key is not None
