"""Configuration: YAML file plus PROVIDER_ environment, validated with clear messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from provider.cli import main
from provider.config import ConfigError, Settings, load_settings
from tests.conftest import REPO


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("PROVIDER_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_defaults_are_the_embedded_setup() -> None:
    settings = load_settings()
    assert settings.store.url is None and settings.data_dir == Path("data")
    assert settings.public_url == "http://127.0.0.1:8080"


def test_yaml_then_environment_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        yaml.safe_dump({"server": {"port": 9000, "host": "0.0.0.0"}, "logging": {"level": "DEBUG"}})
    )
    monkeypatch.setenv("PROVIDER_SERVER__PORT", "9100")
    settings = load_settings(path)
    assert settings.server.port == 9100 and settings.server.host == "0.0.0.0"
    assert settings.logging.level == "DEBUG"


def test_config_path_from_environment_and_default_location(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "provider.yaml").write_text("server:\n  port: 7001\n")
    assert load_settings().server.port == 7001
    other = tmp_path / "other.yaml"
    other.write_text("server:\n  port: 7002\n")
    monkeypatch.setenv("PROVIDER_CONFIG", str(other))
    assert load_settings().server.port == 7002


def test_invalid_values_name_key_and_problem(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("server:\n  port: seventy\n  colour: red\nauth:\n  bootstrap_admin_key: short-secret\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    message = str(caught.value)
    assert "server.port: Input should be a valid integer" in message
    assert "server.colour: Extra inputs are not permitted" in message
    assert "auth.bootstrap_admin_key: Value error, must be at least 32 characters long" in message
    assert "short-secret" not in message  # secrets are not echoed


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("server: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(listing)


def test_invalid_configuration_stops_the_cli_with_one_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PROVIDER_STORE__URL", "mysql://db/provider")
    assert main(["migrate"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("provider: invalid configuration")
    assert "store.url: Value error, must start with sqlite+aiosqlite:// or postgresql+asyncpg://" in err
    assert "Traceback" not in err


def test_example_configuration_documents_every_key() -> None:
    """Every settings key appears in config/provider.example.yaml, and the file loads as is."""
    example = REPO / "config" / "provider.example.yaml"
    load_settings(example)
    data = yaml.safe_load(example.read_text())

    def keys(model: type, prefix: str = "") -> set[str]:
        found = set()
        for name, field in model.model_fields.items():  # type: ignore[attr-defined]
            annotation = field.annotation
            if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
                found |= keys(annotation, f"{prefix}{name}.")
            else:
                found.add(f"{prefix}{name}")
        return found

    def present(path: str) -> bool:
        node = data
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True

    missing = sorted(k for k in keys(Settings) if not present(k))
    assert missing == [], f"undocumented keys: {missing}"


def test_list_settings_from_the_environment_take_commas_or_json(monkeypatch: pytest.MonkeyPatch) -> None:
    # What the loopback-import refusal tells operators to set, as they would type it.
    monkeypatch.setenv("PROVIDER_IMPORTS__ALLOWED_NETWORKS", "127.0.0.0/8, 10.0.0.0/8")
    monkeypatch.setenv("PROVIDER_IMPORTS__ALLOWED_SCHEMES", "https")
    monkeypatch.setenv("PROVIDER_NOTIFICATIONS__ALLOWED_NETWORKS", '["192.168.0.0/16"]')
    monkeypatch.setenv("PROVIDER_COMPUTE__KUBERNETES__IMAGE_PULL_SECRETS", "registry-a,registry-b")
    monkeypatch.setenv(
        "PROVIDER_EDC__CONNECTORS", json.dumps({"main": {"secret": "x" * 8 + "0123456789abcdef" * 2}})
    )
    monkeypatch.setenv("PROVIDER_EDC__CONNECTORS__MAIN__CALLBACK_HOSTS", "edc-controlplane,edc.example.org")
    settings = load_settings()
    assert settings.imports.allowed_networks == ["127.0.0.0/8", "10.0.0.0/8"]
    assert settings.imports.allowed_schemes == ["https"]
    assert settings.notifications.allowed_networks == ["192.168.0.0/16"]
    assert settings.compute.kubernetes.image_pull_secrets == ["registry-a", "registry-b"]
    assert settings.edc.connectors["main"].callback_hosts == ["edc-controlplane", "edc.example.org"]


def serve_with(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PROVIDER_")}
    return subprocess.run(
        [sys.executable, "-m", "provider", "serve", "--port", "0"],
        cwd=tmp_path,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


# A value that cannot be read at all is one line naming the variable; one that reads but is
# invalid is the usual message: a line, then the key and its problem.
@pytest.mark.parametrize(
    ("name", "value", "named", "lines"),
    [
        ("PROVIDER_IMPORTS__ALLOWED_NETWORKS", '["127.0.0.0/8"', "PROVIDER_IMPORTS__ALLOWED_NETWORKS: ", 1),
        ("PROVIDER_TOKENS__SIGNING_KEYS", "k1", "PROVIDER_TOKENS__SIGNING_KEYS: is not JSON", 1),
        ("PROVIDER_SERVER", "port=9000", "PROVIDER_SERVER: is not JSON", 1),
        ("PROVIDER_IMPORTS__ALLOWED_NETWORKS", "127.0.0.0/8,loopback", "imports.allowed_networks: ", 2),
        ("PROVIDER_SERVER__MAX_CONNECTIONS", "many", "server.max_connections: ", 2),
    ],
)
def test_a_bad_setting_in_the_environment_stops_serve_with_one_message_naming_it(
    tmp_path: Path, name: str, value: str, named: str, lines: int
) -> None:
    result = serve_with(tmp_path, **{name: value})
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("provider: invalid configuration"), result.stderr
    assert named in result.stderr and len(result.stderr.strip().splitlines()) == lines, result.stderr
