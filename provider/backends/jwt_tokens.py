"""Workspace tokens as JWTs (pyjwt): HS256 or RS256, with `kid` so that keys can rotate."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import jwt

from provider.domain.errors import Unauthenticated
from provider.domain.tokens import TokenClaims, WorkspaceToken
from provider.domain.workspaces import Scope


@dataclass(frozen=True)
class SigningKey:
    kid: str
    algorithm: str
    signing: str | bytes | None  # secret (HS256) or PEM private key (RS256); None: verify only
    verifying: str | bytes


class JwtTokenCodec:
    """The first key signs; every key verifies, so tokens outlive a rotation until they expire."""

    def __init__(self, keys: list[SigningKey], issuer: str, audience: str) -> None:
        if not keys or keys[0].signing is None:
            raise ValueError("the first token key must be able to sign")
        self.keys = {k.kid: k for k in keys}
        self.active = keys[0]
        self.issuer = issuer
        self.audience = audience

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
                options={"require": ["exp", "iat", "jti", "sub", "aud", "iss"]},
                leeway=5,
            )
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
