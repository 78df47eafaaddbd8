"""Tenant API keys from configuration, hashed at rest: which tenant a presented bearer key belongs to.

KEEL_API_KEYS is JSON `{"<tenant>": ["sha256:<hex of the key>", ...]}`. Without it, the local
development keys `acme-dev-key` and `globex-dev-key` are accepted: for demos on loopback only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
from collections.abc import Mapping, Sequence

from keel.intake import tenant_problem

ENV = "KEEL_API_KEYS"
_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")


def hash_key(key: str) -> str:
    """The stored form of a key. Keys are long random secrets, so a plain digest is enough (no salt)."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


DEV_KEYS: dict[str, list[str]] = {"acme": [hash_key("acme-dev-key")], "globex": [hash_key("globex-dev-key")]}


class ApiKeyConfigError(ValueError):
    """KEEL_API_KEYS is not a JSON object of tenant -> list of sha256 hashes."""


class ApiKeys:
    def __init__(self, hashes: Mapping[str, Sequence[str]]) -> None:
        self._entries: list[tuple[str, bytes]] = []
        for tenant, values in hashes.items():
            if not isinstance(tenant, str) or not tenant or not isinstance(values, list | tuple):
                raise ApiKeyConfigError(f"{ENV}: tenant {tenant!r} must map to a list of key hashes")
            # A tenant the scheduler's intake would refuse could submit nothing: say so at start-up.
            problem = tenant_problem(tenant)
            if problem:
                raise ApiKeyConfigError(f"{ENV}: {problem}")
            for value in values:
                if not isinstance(value, str) or not _HASH.match(value):
                    raise ApiKeyConfigError(
                        f"{ENV}: a key hash of tenant {tenant!r} is not 'sha256:<64 hex digits>'"
                    )
                owner = next((t for t, v in self._entries if v == value.encode()), tenant)
                if owner != tenant:  # one key for two tenants would make every write ambiguous
                    raise ApiKeyConfigError(
                        f"{ENV}: the same key hash is listed for {owner!r} and {tenant!r}"
                    )
                self._entries.append((tenant, value.encode()))

    @classmethod
    def from_json(cls, text: str) -> ApiKeys:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ApiKeyConfigError(f"{ENV} is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ApiKeyConfigError(f'{ENV} must be a JSON object: {{"<tenant>": ["sha256:<hex>", ...]}}')
        return cls(data)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ApiKeys:
        raw = (os.environ if environ is None else environ).get(ENV)
        return cls.from_json(raw) if raw else cls(DEV_KEYS)

    @property
    def tenants(self) -> set[str]:
        return {tenant for tenant, _ in self._entries}

    def tenant_for(self, key: str) -> str | None:
        """The tenant of `key`, or None. Compares against every stored hash in constant time each and
        does not stop at a match, so the time taken says nothing about which key came close."""
        if not key:
            return None
        presented = hash_key(key).encode()
        found = None
        for tenant, stored in self._entries:
            if hmac.compare_digest(presented, stored):
                found = tenant
        return found


def tenant_for(key: str) -> str | None:
    """The tenant of `key` under the keys configured in this process's environment."""
    return ApiKeys.from_env().tenant_for(key)


OPERATOR_ENV = "KEEL_OPERATOR_KEYS"
DEV_OPERATOR_KEYS = [hash_key("ops-dev-key")]


def operator_hashes() -> list[str]:
    """Hashes of the operators' keys: KEEL_OPERATOR_KEYS (a JSON list of "sha256:<hex>"), else the local
    development key `ops-dev-key`. Operators work across tenants (dead letters), so they have keys of
    their own, never a tenant's."""
    raw = os.environ.get(OPERATOR_ENV)
    if raw is None:
        return list(DEV_OPERATOR_KEYS)
    try:
        values = json.loads(raw)
    except ValueError as exc:
        raise ApiKeyConfigError(f"{OPERATOR_ENV} is not valid JSON: {exc}") from None
    if not isinstance(values, list) or not all(isinstance(v, str) and _HASH.match(v) for v in values):
        raise ApiKeyConfigError(f'{OPERATOR_ENV} must be a JSON list of "sha256:<64 hex digits>"')
    return values


def is_operator(key: str, hashes: Sequence[str]) -> bool:
    presented = hash_key(key).encode()
    return any(hmac.compare_digest(presented, h.encode()) for h in hashes)
