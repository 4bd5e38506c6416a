"""Workspace tokens as JWTs (pyjwt): HS256 or RS256, with `kid` so that keys can rotate."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import jwt

from provider.domain.errors import Unauthenticated
from provider.domain.tokens import TokenClaims, WorkspaceToken
from provider.domain.workspaces import Scope
from provider.services.ports import Clock

LEEWAY_SECONDS = 5  # clock skew between the replicas that sign and those that verify


@dataclass(frozen=True)
class SigningKey:
    kid: str
    algorithm: str
    signing: str | bytes | None  # secret (HS256) or PEM private key (RS256); None: verify only
    verifying: str | bytes


class JwtTokenCodec:
    """The first key signs; every key verifies, so tokens outlive a rotation until they expire."""

    def __init__(
        self, keys: list[SigningKey], issuer: str, audience: str, clock: Clock = lambda: datetime.now(UTC)
    ) -> None:
        if not keys or keys[0].signing is None:
            raise ValueError("the first token key must be able to sign")
        self.keys = {k.kid: k for k in keys}
        self.active = keys[0]
        self.issuer = issuer
        self.audience = audience
        self.clock = clock

    def encode(self, token: WorkspaceToken) -> str:
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": token.tenant_id,
            "jti": token.id,
            "ws": token.workspace_id,
            "scope": " ".join(sorted(s.value for s in token.scopes)),
            "iat": int(token.created_at.timestamp()),
            "exp": int(token.expires_at.timestamp()),
        }
        assert self.active.signing is not None
        return jwt.encode(
            claims, self.active.signing, algorithm=self.active.algorithm, headers={"kid": self.active.kid}
        )

    def decode(self, credential: str) -> TokenClaims:
        try:
            header = jwt.get_unverified_header(credential)
            key = self.keys.get(str(header.get("kid")))
            if key is None:
                raise Unauthenticated("the token was signed with an unknown key")
            claims = jwt.decode(
                credential,
                key.verifying,
                algorithms=[key.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                # Expiry is judged by the service's clock, like every other expiry (pyjwt's is
                # the wall clock), so that both agree on when a token ends.
                options={
                    "require": ["exp", "iat", "jti", "sub", "aud", "iss"],
                    "verify_exp": False,
                    "verify_iat": False,
                },
            )
            now = self.clock().timestamp()
            if int(claims["exp"]) <= now - LEEWAY_SECONDS:
                raise jwt.ExpiredSignatureError("expired")
            if int(claims["iat"]) > now + LEEWAY_SECONDS:
                raise jwt.ImmatureSignatureError("issued in the future")
            scopes = frozenset(Scope(s) for s in str(claims.get("scope", "")).split())
            return TokenClaims(
                token_id=str(claims["jti"]),
                workspace_id=str(claims["ws"]),
                tenant_id=str(claims["sub"]),
                scopes=scopes,
                expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("the workspace token has expired") from exc
        except (jwt.PyJWTError, KeyError, ValueError) as exc:
            raise Unauthenticated("the workspace token is not valid") from exc

    def looks_like_token(self, credential: str) -> bool:
        return credential.startswith("eyJ") and credential.count(".") == 2
