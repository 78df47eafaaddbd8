"""API keys from configuration, hashed at rest: which principal (id, tenant, role) a presented key is.

KEEL_API_KEYS is a JSON list of keys, each
`{"id", "tenant" (null for operator and admin), "role", "hash": "sha256:<hex>", "not_before"?,
"expires_at"?, "revoked"?}`. Rotation with overlap: a new key under a new id, both accepted until the
old one's `expires_at`. The older form `{"<tenant>": ["sha256:..."]}` is still read, as submitter keys;
KEEL_OPERATOR_KEYS (a JSON list of hashes) as operator keys. The development keys are accepted only
under KEEL_ENV=dev and only when no key is configured (docs/tenancy.md, section 1).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from keel.intake import tenant_problem
from services.api.pool import EVERY_TENANT

ENV = "KEEL_API_KEYS"
OPERATOR_ENV = "KEEL_OPERATOR_KEYS"
ENV_MODE = "KEEL_ENV"
ROLES = ("viewer", "submitter", "operator", "admin")  # each may what the one before it may
TENANT_ROLES = frozenset({"viewer", "submitter"})  # act for one tenant; the others across tenants
_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")
_KEY_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_FIELDS = {"id", "tenant", "role", "hash", "not_before", "expires_at", "revoked"}


def hash_key(key: str) -> str:
    """The stored form of a key. Keys are long random secrets, so a plain digest is enough (no salt)."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


class ApiKeyConfigError(ValueError):
    """The key configuration is malformed: the API refuses to start, naming the problem."""


@dataclass(frozen=True)
class Principal:
    """Who calls: `id` as events and audit rows name it, a tenant (None: across tenants), a role."""

    id: str
    role: str
    tenant: str | None

    def may(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)

    @property
    def operator(self) -> bool:
        """Acts across tenants (an operator or admin, who has no tenant of its own)."""
        return self.tenant is None

    @property
    def sees(self) -> str:
        """The tenant its database connections are lent for: its own, or '*' (every tenant)."""
        return self.tenant if self.tenant is not None else EVERY_TENANT


@dataclass(frozen=True)
class ApiKey:
    id: str
    tenant: str | None
    role: str
    hash: str
    not_before: datetime | None = None
    expires_at: datetime | None = None
    revoked: bool = False

    def valid_at(self, now: datetime) -> bool:
        if self.revoked or (self.not_before is not None and now < self.not_before):
            return False
        return self.expires_at is None or now < self.expires_at


def dev_mode(environ: Mapping[str, str] | None = None) -> bool:
    return (os.environ if environ is None else environ).get(ENV_MODE, "").strip().lower() == "dev"


DEV_KEYS = [
    ApiKey("acme-dev", "acme", "submitter", hash_key("acme-dev-key")),
    ApiKey("globex-dev", "globex", "submitter", hash_key("globex-dev-key")),
    ApiKey("acme-viewer-dev", "acme", "viewer", hash_key("acme-viewer-dev-key")),
    ApiKey("ops-dev", None, "operator", hash_key("ops-dev-key")),
    ApiKey("admin-dev", None, "admin", hash_key("admin-dev-key")),
]


def check_role_and_tenant(where: str, role: Any, tenant: Any) -> None:
    """A tenant role needs a valid tenant; an operator or admin has none (it acts across tenants)."""
    if role not in ROLES:
        raise ApiKeyConfigError(f"{where}: role {role!r} is not one of {', '.join(ROLES)}")
    if role in TENANT_ROLES:
        problem = tenant_problem(tenant) if isinstance(tenant, str) else f"a {role} needs a tenant"
        if problem:  # a tenant the scheduler's intake would refuse could submit nothing
            raise ApiKeyConfigError(f"{where}: {problem}")
    elif tenant is not None:
        raise ApiKeyConfigError(f"{where}: an {role} acts across tenants: its tenant must be null")


def _instant(where: str, name: str, value: Any) -> datetime | None:
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        at = None
    if at is None:
        raise ApiKeyConfigError(f"{where}: {name} {value!r} is not an ISO 8601 date-time")
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _key_of(where: str, item: Any) -> ApiKey:
    if not isinstance(item, dict):
        raise ApiKeyConfigError(f"{where}: each key is a JSON object with id, tenant, role, hash")
    unknown = sorted(set(item) - _FIELDS)
    if unknown:
        raise ApiKeyConfigError(f"{where}: unknown field(s) {unknown}; known: {sorted(_FIELDS)}")
    key_id = item.get("id")
    if not isinstance(key_id, str) or not _KEY_ID.match(key_id):
        raise ApiKeyConfigError(f"{where}: id {key_id!r} must match {_KEY_ID.pattern}")
    where = f"{where} (key {key_id!r})"
    check_role_and_tenant(where, item.get("role"), item.get("tenant"))
    value = item.get("hash")
    if not isinstance(value, str) or not _HASH.match(value):
        raise ApiKeyConfigError(f"{where}: hash is not 'sha256:<64 hex digits>'")
    if not isinstance(item.get("revoked", False), bool):
        raise ApiKeyConfigError(f"{where}: revoked must be true or false")
    return ApiKey(
        key_id,
        item.get("tenant"),
        item["role"],
        value,
        _instant(where, "not_before", item.get("not_before")),
        _instant(where, "expires_at", item.get("expires_at")),
        item.get("revoked", False),
    )


def _legacy(data: dict[str, Any]) -> list[ApiKey]:
    """`{"<tenant>": ["sha256:..."]}`: submitter keys with ids `<tenant>-<first 8 hex of the hash>`."""
    found = []
    for tenant, values in data.items():
        if not isinstance(values, list | tuple):
            raise ApiKeyConfigError(f"{ENV}: tenant {tenant!r} must map to a list of key hashes")
        problem = tenant_problem(tenant)
        if problem:
            raise ApiKeyConfigError(f"{ENV}: {problem}")
        for value in values:
            if not isinstance(value, str) or not _HASH.match(value):
                raise ApiKeyConfigError(
                    f"{ENV}: a key hash of tenant {tenant!r} is not 'sha256:<64 hex digits>'"
                )
            found.append(ApiKey(f"{tenant}-{value[7:15]}", tenant, "submitter", value))
    return found


class ApiKeys:
    def __init__(self, keys: Sequence[ApiKey]) -> None:
        ids: dict[str, ApiKey] = {}
        hashes: dict[str, ApiKey] = {}
        for key in keys:
            if key.id in ids:
                raise ApiKeyConfigError(f"{ENV}: two keys have the id {key.id!r}")
            other = hashes.get(key.hash)
            if other is not None:  # one secret for two principals would make every action ambiguous
                owners = (other.tenant or other.role, key.tenant or key.role)
                raise ApiKeyConfigError(
                    f"{ENV}: the same key hash is listed for {owners[0]!r} and {owners[1]!r}"
                )
            ids[key.id], hashes[key.hash] = key, key
        self.keys = list(keys)
        self._stored = [(k, k.hash.encode()) for k in self.keys]

    @classmethod
    def parse(cls, text: str) -> list[ApiKey]:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ApiKeyConfigError(f"{ENV} is not valid JSON: {exc}") from None
        if isinstance(data, list):
            return [_key_of(f"{ENV}[{i}]", item) for i, item in enumerate(data)]
        if isinstance(data, dict):
            return _legacy(data)
        raise ApiKeyConfigError(f'{ENV} must be a JSON list of keys (or the older {{"<tenant>": [hashes]}})')

    @classmethod
    def from_json(cls, text: str) -> ApiKeys:
        return cls(cls.parse(text))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ApiKeys:
        env = os.environ if environ is None else environ
        keys = cls.parse(env[ENV]) if env.get(ENV) else []
        keys += operator_keys(env.get(OPERATOR_ENV))
        if not keys and dev_mode(env):
            keys = list(DEV_KEYS)
        return cls(keys)

    def principal(self, presented: str, now: datetime | None = None) -> Principal | None:
        """The principal of `presented`, or None (unknown, not yet valid, expired or revoked). Compares
        against every stored hash in constant time each and does not stop at a match, so the time taken
        says nothing about which key came close."""
        if not presented:
            return None
        digest = hash_key(presented).encode()
        found = None
        for key, stored in self._stored:
            if hmac.compare_digest(digest, stored):
                found = key
        if found is None or not found.valid_at(now or datetime.now(UTC)):
            return None
        return Principal(f"key:{found.id}", found.role, found.tenant)


def tenant_for(key: str) -> str | None:
    """The tenant of `key` under the keys configured in this process's environment."""
    found = ApiKeys.from_env().principal(key)
    return found.tenant if found else None


def operator_keys(raw: str | None) -> list[ApiKey]:
    """KEEL_OPERATOR_KEYS, a JSON list of "sha256:<hex>", as operator keys `operator-<first 8 hex>`.
    Operators work across tenants (dead letters, decisions), so they have keys of their own."""
    if raw is None:
        return []
    try:
        values = json.loads(raw)
    except ValueError as exc:
        raise ApiKeyConfigError(f"{OPERATOR_ENV} is not valid JSON: {exc}") from None
    if not isinstance(values, list) or not all(isinstance(v, str) and _HASH.match(v) for v in values):
        raise ApiKeyConfigError(f'{OPERATOR_ENV} must be a JSON list of "sha256:<64 hex digits>"')
    return [ApiKey(f"operator-{v[7:15]}", None, "operator", v) for v in values]
