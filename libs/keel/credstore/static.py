"""Credentials for local use: a table `{tenant: {name: secret}}` from KEEL_TOOL_CREDENTIALS or a file."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from keel.credstore.envelope import CredentialConfigError

# The explicit shared tenant: its row serves a tenant that has no row of its own for that name.
SHARED_TENANT = "*"

Table = Mapping[str, Mapping[str, str]]


def resolve(tenant_id: str, rows: Mapping[str, object], shared: bool) -> str | None:
    """Which owner's row a tenant may use: its own, else the shared one. Never another tenant's."""
    if not tenant_id:
        return None
    if tenant_id in rows:
        return tenant_id
    return SHARED_TENANT if shared and SHARED_TENANT in rows else None


class MappingCredentials:
    """A CredentialSource over an in-memory table (values are never shown by repr)."""

    def __init__(self, table: Table, shared: bool = True) -> None:
        self._table = {tenant: dict(names) for tenant, names in table.items()}
        self._shared = shared

    def __repr__(self) -> str:
        return f"MappingCredentials(tenants={sorted(self._table)}, shared={self._shared})"

    def lookup(self, tenant_id: str, name: str) -> str | None:
        rows = {owner: names[name] for owner, names in self._table.items() if name in names}
        owner = resolve(tenant_id, rows, self._shared)
        return None if owner is None else rows[owner]

    @classmethod
    def from_json(cls, text: str, where: str, shared: bool = True) -> MappingCredentials:
        """Parse and check `{tenant: {name: secret}}`; errors say where and what, never a value."""
        try:
            given = json.loads(text)
        except ValueError:
            raise CredentialConfigError(f"{where} is not JSON") from None
        if not isinstance(given, dict):
            raise CredentialConfigError(f"{where} must be a JSON object of tenant -> {{name: secret}}")
        table: dict[str, dict[str, str]] = {}
        for tenant, names in given.items():
            if not isinstance(names, dict):
                raise CredentialConfigError(
                    f"{where}: tenant {tenant!r} must map to an object of name -> secret"
                )
            for name, secret in names.items():
                if not isinstance(secret, str):
                    raise CredentialConfigError(f"{where}: {name!r} of tenant {tenant!r} is not a string")
                if not secret:
                    raise CredentialConfigError(f"{where}: {name!r} of tenant {tenant!r} is empty")
            table[tenant] = dict(names)
        return cls(table, shared)

    @classmethod
    def from_file(cls, path: Path, shared: bool = True) -> MappingCredentials:
        try:
            text = path.read_text()
        except OSError as exc:
            raise CredentialConfigError(f"cannot read the credentials file {path}: {exc.strerror}") from None
        return cls.from_json(text, f"the credentials file {path}", shared)
