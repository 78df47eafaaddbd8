"""Per-tenant credentials of tools: where they come from, chosen by KEEL_CREDENTIALS.

A tool call's credentials come from a CredentialSource, never from the payload: `env`
(KEEL_TOOL_CREDENTIALS, the local default), `file:PATH` (the same JSON in a file) or `postgres` (the
encrypted `tool_credentials` table). Every source gives a tenant its own value, else the explicit
shared row `*`, never another tenant's (KEEL_CREDENTIAL_SHARED=false switches the shared row off).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import psycopg
from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from keel.credstore.envelope import (
    CredentialConfigError,
    CredentialDecryptError,
    CredentialError,
    CredentialKeyError,
    CredentialUnavailable,
    Keyring,
)
from keel.credstore.postgres import Entry, PostgresCredentials, Rotation
from keel.credstore.static import SHARED_TENANT, MappingCredentials, Table
from keel.settings import Settings

__all__ = [
    "SHARED_TENANT",
    "CredentialConfigError",
    "CredentialDecryptError",
    "CredentialError",
    "CredentialKeyError",
    "CredentialSettings",
    "CredentialSource",
    "CredentialUnavailable",
    "Entry",
    "Keyring",
    "MappingCredentials",
    "PostgresCredentials",
    "Rotation",
    "configured_credentials",
    "postgres_credentials",
]


class CredentialSource(Protocol):
    """The tenant's secret for a credential name, or None when it has none (nor a shared one)."""

    def lookup(self, tenant_id: str, name: str) -> str | None: ...


class CredentialSettings(Settings):
    model_config = SettingsConfigDict(env_prefix="KEEL_", extra="ignore")

    # env | file:PATH | postgres
    credentials: str = "env"
    # The `env` source: {"tenant": {"name": "secret"}, "*": {...}} as JSON.
    tool_credentials: SecretStr | None = None
    # The `postgres` source: {"key_id": "base64 of 32 random bytes"} and the id new values are sealed under.
    credential_keys: SecretStr | None = None
    credential_key_id: str | None = None
    # How long a lookup is reused before the table is asked again (0: never cached).
    credential_cache_ttl_s: float = Field(default=5.0, ge=0)
    # Whether a tenant without a row of its own may use the shared row `*`.
    credential_shared: bool = True


def postgres_credentials(settings: CredentialSettings) -> PostgresCredentials:
    """The encrypted table; the keys are checked now, the database is reached at the first use."""
    from keel import db

    keys = settings.credential_keys.get_secret_value() if settings.credential_keys else None
    keyring = Keyring.from_config(keys, settings.credential_key_id)

    def connect() -> psycopg.Connection[Any]:
        return psycopg.connect(db.database_url(settings, start=False), autocommit=True)

    return PostgresCredentials(
        connect, keyring, ttl_s=settings.credential_cache_ttl_s, shared=settings.credential_shared
    )


def configured_credentials(
    settings: CredentialSettings | None = None, local_default: Mapping[str, Mapping[str, str]] | None = None
) -> CredentialSource:
    """The source KEEL_CREDENTIALS names. `local_default` serves the `env` source when
    KEEL_TOOL_CREDENTIALS is not set (e.g. the local simulators' tokens)."""
    settings = settings or CredentialSettings()
    choice, shared = settings.credentials, settings.credential_shared
    if choice == "env":
        if settings.tool_credentials is None:
            table: Table = local_default or {}
            return MappingCredentials(table, shared)
        return MappingCredentials.from_json(
            settings.tool_credentials.get_secret_value(), "KEEL_TOOL_CREDENTIALS", shared
        )
    if choice.startswith("file:") and choice[len("file:") :]:
        return MappingCredentials.from_file(Path(choice[len("file:") :]), shared)
    if choice == "postgres":
        return postgres_credentials(settings)
    raise CredentialConfigError(f"KEEL_CREDENTIALS is {choice!r}: expected env, file:PATH or postgres")
