"""Workspace token signing: HS256 and RS256, key ids and rotation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from provider.app import build_token_codec
from provider.backends.jwt_tokens import JwtTokenCodec, SigningKey
from provider.config import Settings
from provider.domain.errors import Unauthenticated
from provider.domain.tokens import WorkspaceToken
from provider.domain.workspaces import Scope

NOW = datetime.now(UTC).replace(microsecond=0)


def token(**changes: object) -> WorkspaceToken:
    base = WorkspaceToken(
        "tok_1", "ws_1", "ten_1", frozenset({Scope.OBJECTS_READ}), "", NOW, NOW + timedelta(hours=1)
    )
    return WorkspaceToken(**{**base.__dict__, **changes})  # type: ignore[arg-type]


def rsa_files(directory: Path) -> tuple[Path, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = directory / "key.pem"
    public = directory / "pub.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def test_claims_round_trip_and_tampering_is_refused() -> None:
    codec = JwtTokenCodec([SigningKey("k1", "HS256", "s" * 32, "s" * 32)], "https://p.example", "provider")
    jwt = codec.encode(token())
    claims = codec.decode(jwt)
    assert (claims.token_id, claims.workspace_id, claims.tenant_id) == ("tok_1", "ws_1", "ten_1")
    assert claims.scopes == {Scope.OBJECTS_READ} and codec.looks_like_token(jwt)
    header, payload, signature = jwt.split(".")
    with pytest.raises(Unauthenticated):
        codec.decode(f"{header}.{payload}.{signature[:-2]}AA")
    other_audience = JwtTokenCodec(
        [SigningKey("k1", "HS256", "s" * 32, "s" * 32)], "https://p.example", "other"
    )
    with pytest.raises(Unauthenticated):
        other_audience.decode(jwt)
    expired = codec.encode(token(created_at=NOW - timedelta(hours=2), expires_at=NOW - timedelta(hours=1)))
    with pytest.raises(Unauthenticated, match="expired"):
        codec.decode(expired)


def test_expiry_follows_the_service_clock() -> None:
    from tests.conftest import MovableClock

    clock = MovableClock()
    codec = JwtTokenCodec(
        [SigningKey("k1", "HS256", "s" * 32, "s" * 32)], "https://p.example", "provider", clock
    )
    jwt = codec.encode(token())  # valid for an hour from NOW
    clock.advance(3600 + 60)
    with pytest.raises(Unauthenticated, match="expired"):
        codec.decode(jwt)
    # A token issued by a clock that has moved on is valid by that clock.
    later = clock()
    issued = codec.encode(token(created_at=later, expires_at=later + timedelta(hours=1)))
    assert codec.decode(issued).token_id == "tok_1"


def test_rs256_keys_from_files_and_rotation(tmp_path: Path) -> None:
    private, public = rsa_files(tmp_path)
    old = {"kid": "old", "algorithm": "HS256", "secret": "old-signing-secret-" + "o" * 21}
    settings = Settings(data_dir=tmp_path, tokens={"signing_keys": [old]})
    old_token = build_token_codec(settings).encode(token())
    new = {"kid": "new", "algorithm": "RS256", "private_key_file": private, "public_key_file": public}
    rotated = build_token_codec(Settings(data_dir=tmp_path, tokens={"signing_keys": [new, old]}))
    fresh = rotated.encode(token())
    assert rotated.decode(fresh).token_id == "tok_1"
    assert rotated.decode(old_token).token_id == "tok_1"  # old tokens live until the old key goes
    retired = build_token_codec(Settings(data_dir=tmp_path, tokens={"signing_keys": [new]}))
    with pytest.raises(Unauthenticated, match="unknown key"):
        retired.decode(old_token)


def test_embedded_default_key_is_generated_once_and_private(tmp_path: Path) -> None:
    first = build_token_codec(Settings(data_dir=tmp_path / "d"))
    second = build_token_codec(Settings(data_dir=tmp_path / "d"))
    assert second.decode(first.encode(token())).token_id == "tok_1"
    assert ((tmp_path / "d" / "token-signing.key").stat().st_mode & 0o777) == 0o600


def test_signing_key_settings_are_validated(tmp_path: Path) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="at least 32 characters"):
        Settings(tokens={"signing_keys": [{"kid": "k", "secret": "short"}]})
    with pytest.raises(ValidationError, match="public_key_file"):
        Settings(tokens={"signing_keys": [{"kid": "k", "algorithm": "RS256"}]})
