"""Placeholder and weak secrets: a copy of an example's secret, or a short one, must not start the
service, since anyone who reads this repository knows the examples.

The attacker knows every value shipped in deploy/, docker-compose.yml, config/, docs/ and README.md.
Each shipped placeholder is found by scanning those files, and each must stop `provider serve`
with a message naming the setting, as admin key, signing secret, connector secret and the
other secret settings alike.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from provider.config import PLACEHOLDER_SECRETS, ConfigError, is_placeholder, load_settings
from tests.conftest import ADMIN_KEY, REPO

SHIPPED = ("README.md", "docker-compose.yml", ".env.example", "deploy", "config", "docs")
# What the scan finds that is no secret, and why.
NOT_SECRETS = {
    "provider-secrets": "secret.existingSecret of the Helm chart names a Secret",
    "whsec_…": "docs/notifications.md elides a secret that the service returns",
}

_NAME = r"\w*(?:secret|password|admin_?key|api_?key|auth_?code)\w*"
_VALUE = r"""(?P<value>"[^"\n]*"|'[^'\n]*'|<[^>\n]*>|[^\s,}\]#]+)"""
SECRET_VALUES = [
    # YAML keys, also in comments and docs: "  secret: <32+ random characters>"
    re.compile(rf"""(?im)^[ \t#-]*["']?{_NAME}["']?:[ \t]+{_VALUE}"""),
    # YAML flow mappings: "{kid: k1, secret: <32+ characters>}"
    re.compile(rf"(?i)[{{,][ \t]*{_NAME}:[ \t]+{_VALUE}"),
    # JSON: '"secret": "..."'
    re.compile(rf"""(?i)"{_NAME}":[ \t]*{_VALUE}"""),
    # environment and command lines: "PROVIDER_API_KEY=...", "--from-literal=NAME=..."
    re.compile(rf"(?i)(?<![\w{{$]){_NAME}={_VALUE}"),
    # compose defaults: "${S3_SERVICE_SECRET:-...}"
    re.compile(rf"(?i)\$\{{{_NAME}:?-(?P<value>[^}}]*)\}}"),
    # URL passwords: "postgresql+asyncpg://user:...@host"
    re.compile(r"://[^/:@\s]+:(?P<value>[^@\s/]+)@"),
    # anything marked as a placeholder
    re.compile(r"(?i)(?P<value>[\w.+/-]*(?:replace-?me|change-?me)(?![a-z])[\w.+/-]*)"),
]


BINARY = {".png"}  # screenshots in docs/: no text to assign a secret in


def shipped_files() -> Iterator[Path]:
    for name in SHIPPED:
        path = REPO / name
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        yield from (f for f in files if f.suffix not in BINARY)


def shipped_secret_values() -> dict[str, set[str]]:
    """Every literal value that a shipped file assigns to something named like a secret."""
    found: dict[str, set[str]] = {}
    for path in shipped_files():
        text = path.read_text(encoding="utf-8")
        for pattern in SECRET_VALUES:
            for match in pattern.finditer(text):
                value = match.group("value").strip("\"'")
                if (
                    value
                    and not value.startswith(("$", "[", "{"))
                    and value.lower()
                    not in (
                        "null",
                        "~",
                        "true",
                        "false",
                    )
                ):
                    found.setdefault(value, set()).add(str(path.relative_to(REPO)))
    return found


def test_every_secret_value_shipped_in_the_repository_is_a_refused_placeholder() -> None:
    found = shipped_secret_values()
    # The scan sees the kinds of placeholders there are (else it would prove nothing).
    assert {"REPLACE-ME-with-32-or-more-random-characters", "REPLACE-ME", "<32+ characters>"} <= set(found)
    unlisted = {
        value: sorted(files)
        for value, files in found.items()
        if value not in NOT_SECRETS and not is_placeholder(value)
    }
    assert not unlisted, f"add these to provider.config.PLACEHOLDER_SECRETS: {unlisted}"
    assert not is_placeholder(ADMIN_KEY), "the tests' own admin key must not be a shipped placeholder"


# --- every placeholder in every secret setting ---------------------------------------------

STRONG = "strong-" + secrets.token_hex(16)


def connectors(secret: str, api_key: str | None = None) -> str:
    main: dict[str, str] = {"secret": secret}
    if api_key is not None:
        main["management_api_key"] = api_key
    return json.dumps({"main": main})


# setting refused -> how a value reaches it as PROVIDER_* variables
SECRET_SETTINGS: dict[str, Callable[[str], dict[str, str]]] = {
    "auth.bootstrap_admin_key": lambda v: {"PROVIDER_AUTH__BOOTSTRAP_ADMIN_KEY": v},
    "tokens.signing_keys.0.secret": lambda v: {
        "PROVIDER_TOKENS__SIGNING_KEYS": json.dumps([{"kid": "k1", "algorithm": "HS256", "secret": v}])
    },
    "edc.connectors.main.secret": lambda v: {"PROVIDER_EDC__CONNECTORS": connectors(v)},
    "edc.events.auth_code": lambda v: {"PROVIDER_EDC__EVENTS__AUTH_CODE": v},
    "signaling.control_planes.main.secret": lambda v: {
        "PROVIDER_SIGNALING__CONTROL_PLANES": json.dumps({"main": {"secret": v}})
    },
}
# Credentials of other systems: any length, but never a placeholder.
CREDENTIAL_SETTINGS: dict[str, Callable[[str], dict[str, str]]] = {
    "storage.s3.secret_access_key": lambda v: {"PROVIDER_STORAGE__S3__SECRET_ACCESS_KEY": v},
    "edc.connectors.main.management_api_key": lambda v: {"PROVIDER_EDC__CONNECTORS": connectors(STRONG, v)},
    "signaling.control_planes.main.callback_token": lambda v: {
        "PROVIDER_SIGNALING__CONTROL_PLANES": json.dumps({"main": {"secret": STRONG, "callback_token": v}})
    },
    "signaling.control_planes.main.registration.authorization": lambda v: {
        "PROVIDER_SIGNALING__CONTROL_PLANES": json.dumps(
            {
                "main": {
                    "secret": STRONG,
                    "registration": {
                        "url": "https://cp.example.org/signaling",
                        "authorization": {"type": "oauth2_client_credentials", "clientSecret": v},
                    },
                }
            }
        )
    },
    "store.url": lambda v: {
        "PROVIDER_STORE__URL": f"postgresql+asyncpg://provider:{quote(v, safe='')}@db.example.org/provider"
    },
}


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[[dict[str, str]], None]:
    for name in list(os.environ):
        if name.startswith("PROVIDER_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no config/provider.yaml of the working tree

    def put(variables: dict[str, str]) -> None:
        for name, value in variables.items():
            monkeypatch.setenv(name, value)

    return put


def refusal(setting: str) -> str:
    """The message with which loading the configuration, the first step of `provider serve`, stops."""
    with pytest.raises(ConfigError) as refused:
        load_settings()
    message = str(refused.value)
    assert f"\n  {setting}: Value error, " in message, message
    return message


@pytest.mark.parametrize("setting", [*SECRET_SETTINGS, *CREDENTIAL_SETTINGS])
@pytest.mark.parametrize("placeholder", PLACEHOLDER_SECRETS)
def test_each_placeholder_is_refused_in_each_secret_setting(
    environment: Callable[[dict[str, str]], None], placeholder: str, setting: str
) -> None:
    environment({**SECRET_SETTINGS, **CREDENTIAL_SETTINGS}[setting](placeholder))
    line = next(line for line in refusal(setting).splitlines() if line.startswith(f"  {setting}: "))
    assert "placeholder" in line
    if setting == "store.url":
        assert "provider:***@db.example.org" in line  # shown with its password masked
    else:
        assert line.endswith("(got a value that is not shown)"), line


@pytest.mark.parametrize("setting", SECRET_SETTINGS)
@pytest.mark.parametrize(
    "weak, problem",
    [
        (secrets.token_urlsafe(32)[:31], "must be at least 32 characters long"),
        ("a" * 64, "fewer than 8 different characters"),
        ("0123" * 10, "fewer than 8 different characters"),
    ],
    ids=["31-characters", "one-character", "four-characters"],
)
def test_a_short_or_uniform_secret_is_refused(
    environment: Callable[[dict[str, str]], None], setting: str, weak: str, problem: str
) -> None:
    environment(SECRET_SETTINGS[setting](weak))
    message = refusal(setting)
    assert problem in message and weak not in message


def test_random_secrets_of_32_characters_load(environment: Callable[[dict[str, str]], None]) -> None:
    for setting, variables in {**SECRET_SETTINGS, **CREDENTIAL_SETTINGS}.items():
        if setting != "edc.connectors.main.management_api_key":
            environment(variables(secrets.token_hex(16)))
    settings = load_settings()
    assert settings.auth.bootstrap_admin_key is not None and settings.edc.events.auth_code is not None


# --- the real entry point -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(tmp_path: Path, variables: dict[str, str]) -> tuple[int, str, int]:
    """`provider serve` in a process of its own; its exit status, its output and its port."""
    port = free_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith("PROVIDER_")}
    process = subprocess.run(
        [sys.executable, "-m", "provider", "serve", "--port", str(port)],
        cwd=tmp_path,
        env={**env, **variables},
        capture_output=True,
        text=True,
        timeout=120,  # a service that started would serve on: the test fails instead of waiting
    )
    return process.returncode, process.stdout + process.stderr, port


@pytest.mark.parametrize(
    "placeholder",
    ["REPLACE-ME-with-32-or-more-random-characters", "local-admin-key-change-me-0123456789abcdef"],
)
def test_provider_serve_with_a_placeholder_stops_naming_each_key_and_does_not_listen(
    tmp_path: Path, placeholder: str
) -> None:
    variables = {
        **SECRET_SETTINGS["auth.bootstrap_admin_key"](placeholder),
        **SECRET_SETTINGS["tokens.signing_keys.0.secret"](placeholder),
        **SECRET_SETTINGS["edc.connectors.main.secret"](placeholder),
    }
    status, output, port = serve(tmp_path, variables)
    assert status == 2, output
    assert output.startswith("provider: invalid configuration"), output
    for setting in ("auth.bootstrap_admin_key", "tokens.signing_keys.0.secret", "edc.connectors.main.secret"):
        assert f"  {setting}: Value error, is a placeholder" in output, output
    assert placeholder not in output and "listening on" not in output and "Traceback" not in output
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=5):
        pass


def test_provider_serve_with_a_short_admin_key_stops_naming_it(tmp_path: Path) -> None:
    short = secrets.token_hex(8)
    status, output, port = serve(tmp_path, {"PROVIDER_AUTH__BOOTSTRAP_ADMIN_KEY": short})
    assert status == 2, output
    assert "  auth.bootstrap_admin_key: Value error, must be at least 32 characters long" in output
    assert short not in output and "listening on" not in output
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
