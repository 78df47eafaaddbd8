"""JWT bearer tokens (PyJWT): issuer, audience and expiry required; the key from KEEL_JWT_KEY (a PEM
public key: RS256/ES256; anything else: an HS256 secret) or the issuer's JWKS at KEEL_JWT_JWKS_URL.
Claims: `tenant` (or `keel_tenant`) and `role`. The principal id is `token:<issuer>#<subject>`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from keel.intake import tenant_problem
from services.api.apikeys import ROLES, TENANT_ROLES, ApiKeyConfigError, Principal
from services.api.errors import ApiError

ISSUER_ENV, AUDIENCE_ENV = "KEEL_JWT_ISSUER", "KEEL_JWT_AUDIENCE"
KEY_ENV, JWKS_ENV = "KEEL_JWT_KEY", "KEEL_JWT_JWKS_URL"
# Three base64url parts: an API key is told from a token by its shape alone (keys never hold a dot).
TOKEN_SHAPE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")
ASYMMETRIC = ["RS256", "ES256"]  # never "none": PyJWT refuses any algorithm not listed here
REQUIRED = ["exp", "iss", "aud", "sub"]


class TokenRefused(Exception):
    """Why a token is not accepted (the 401's message: never the token itself)."""


class IssuerUnavailable(ApiError):
    """The issuer's key set cannot be fetched: the token is neither accepted nor refused, so 503 (try
    again), not a 401 that would tell a client its valid token is bad."""

    def __init__(self, url: str, why: str) -> None:
        message = f"the token issuer's key set ({url}) cannot be fetched: {why}; try again shortly"
        super().__init__(503, "token_issuer_unavailable", message, {"Retry-After": "5"})


def looks_like_token(presented: str) -> bool:
    return bool(TOKEN_SHAPE.match(presented))


@dataclass
class JwtVerifier:
    issuer: str
    audience: str
    key: Any = None  # a PEM public key's text or an HS256 secret; None with jwks
    algorithms: tuple[str, ...] = ()
    jwks: jwt.PyJWKClient | None = None
    leeway_s: float = 30.0  # clocks of issuer and API differ a little

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> JwtVerifier | None:
        """None when no JWT is configured; a clear error when it is half configured."""
        key, jwks = env.get(KEY_ENV, ""), env.get(JWKS_ENV, "")
        issuer, audience = env.get(ISSUER_ENV, ""), env.get(AUDIENCE_ENV, "")
        if not (key or jwks or issuer or audience):
            return None
        missing = [n for n, v in ((ISSUER_ENV, issuer), (AUDIENCE_ENV, audience)) if not v]
        if not (key or jwks):
            missing.append(f"{KEY_ENV} or {JWKS_ENV}")
        if missing:
            raise ApiKeyConfigError(f"JWT is half configured: set {', '.join(missing)}")
        if key and jwks:
            raise ApiKeyConfigError(f"set {KEY_ENV} or {JWKS_ENV}, not both")
        if jwks:
            return cls(issuer, audience, None, tuple(ASYMMETRIC), jwt.PyJWKClient(jwks))
        if "-----BEGIN PUBLIC KEY-----" in key:
            return cls(issuer, audience, key, tuple(ASYMMETRIC))
        if "-----BEGIN" in key:
            raise ApiKeyConfigError(f"{KEY_ENV} holds a PEM that is not a public key (BEGIN PUBLIC KEY)")
        if len(key) < 32:  # a short HS256 secret can be guessed offline from any token
            raise ApiKeyConfigError(f"{KEY_ENV}: an HS256 secret must be at least 32 characters")
        return cls(issuer, audience, key, ("HS256",))

    def principal(self, token: str) -> Principal:
        try:
            key = self.jwks.get_signing_key_from_jwt(token).key if self.jwks else self.key
            claims = jwt.decode(
                token,
                key,
                algorithms=list(self.algorithms),
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_s,
                options={"require": REQUIRED},
            )
        except jwt.PyJWKClientConnectionError as exc:
            raise IssuerUnavailable(self.jwks.uri if self.jwks else "", str(exc)) from None
        except jwt.ExpiredSignatureError:
            raise TokenRefused("the token has expired") from None
        except jwt.PyJWTError as exc:
            raise TokenRefused(f"the token is not accepted: {exc}") from None
        return principal_of(claims)


def principal_of(claims: Mapping[str, Any]) -> Principal:
    role = claims.get("role")
    if role not in ROLES:
        raise TokenRefused(f"the token's role {role!r} is not one of {', '.join(ROLES)}")
    tenant = claims.get("tenant", claims.get("keel_tenant"))
    if role in TENANT_ROLES:
        if not isinstance(tenant, str) or not tenant:
            raise TokenRefused(f"a {role} token needs a tenant claim (tenant or keel_tenant)")
        problem = tenant_problem(tenant)
        if problem:
            raise TokenRefused(f"the token's tenant is refused: {problem}")
    else:
        tenant = None  # operators and admins act across tenants
    return Principal(f"token:{claims['iss']}#{claims['sub']}", role, tenant)
