"""Who calls: the principal of a request's bearer credential (an API key or a JWT), and the refusal to
start without any credential configured outside development (never fail-open)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from services.api.apikeys import (
    DEV_KEYS,
    ENV,
    ENV_MODE,
    OPERATOR_ENV,
    ApiKeyConfigError,
    ApiKeys,
    Principal,
)
from services.api.auth_jwt import JWKS_ENV, KEY_ENV, JwtVerifier, TokenRefused, looks_like_token


class Unauthenticated(Exception):
    """The credential is unknown, expired, revoked or not acceptable: a 401 with this message."""


class Authenticator:
    def __init__(self, keys: ApiKeys, tokens: JwtVerifier | None = None) -> None:
        self.keys, self.tokens = keys, tokens

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Authenticator:
        """The configured keys and token verifier; ApiKeyConfigError (the API does not start) for a
        malformed configuration, or for none at all outside KEEL_ENV=dev."""
        env = os.environ if environ is None else environ
        keys, tokens = ApiKeys.from_env(env), JwtVerifier.from_env(env)
        if not keys.keys and tokens is None:
            raise ApiKeyConfigError(
                f"no API keys and no JWT configured: set {ENV} (and {OPERATOR_ENV}) or {KEY_ENV} / "
                f"{JWKS_ENV} (docs/tenancy.md); the development keys are accepted only with {ENV_MODE}=dev"
            )
        return cls(keys, tokens)

    @property
    def dev_keys(self) -> bool:
        """Whether the development keys are in force (KEEL_ENV=dev and no key configured)."""
        return any(k in DEV_KEYS for k in self.keys.keys)

    def authenticate(self, presented: str) -> Principal:
        if looks_like_token(presented):
            if self.tokens is None:
                raise Unauthenticated("bearer tokens are not configured here: send an API key")
            try:
                return self.tokens.principal(presented)
            except TokenRefused as exc:
                raise Unauthenticated(str(exc)) from None
        found = self.keys.principal(presented)
        if found is None:
            raise Unauthenticated("invalid API key")
        return found
