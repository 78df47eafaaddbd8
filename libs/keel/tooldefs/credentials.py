"""Where tool credentials come from: per tenant, by name, at call time; never from a payload."""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Protocol

from pydantic import SecretStr

# The shared entry: used by every tenant that has no credential of its own under that name.
ANY_TENANT = "*"


class CredentialSource(Protocol):
    """A store of credentials by (tenant, name). A later source (an encrypted table) plugs in here."""

    def lookup(self, tenant_id: str, name: str) -> str | None: ...


class MissingCredential(LookupError):
    def __init__(self, tenant_id: str, name: str) -> None:
        self.tenant_id, self.name = tenant_id, name
        super().__init__(f"tenant {tenant_id!r} has no credential {name!r}")


class TenantCredentials:
    """The credentials one call may use: bound to the call's tenant, so a definition can never reach
    another tenant's secret whatever it names."""

    def __init__(self, source: CredentialSource, tenant_id: str) -> None:
        self._source, self.tenant_id = source, tenant_id

    def __call__(self, name: str) -> str:
        value = self._source.lookup(self.tenant_id, name)
        if value is None:
            raise MissingCredential(self.tenant_id, name)
        return value


class StaticCredentials:
    """tenant -> name -> secret, from configuration (KEEL_TOOL_CREDENTIALS) or a JSON file; a tenant's
    own entry wins over the shared `*` one, and another tenant's is never read."""

    def __init__(self, table: Mapping[str, Mapping[str, SecretStr | str]]) -> None:
        self._table = {t: dict(names) for t, names in table.items()}

    @classmethod
    def from_file(cls, path: Path | str) -> StaticCredentials:
        """The file's table, read again only when the file changed (a rotated secret is picked up by
        the next call, with no restart and no read per call)."""
        stat = Path(path).stat()
        return cls(_read_table(str(path), stat.st_mtime_ns, stat.st_size))

    def table(self) -> dict[str, dict[str, SecretStr | str]]:
        return {t: dict(names) for t, names in self._table.items()}

    def lookup(self, tenant_id: str, name: str) -> str | None:
        for owner in (tenant_id, ANY_TENANT):
            value = self._table.get(owner, {}).get(name)
            if value is not None:
                return value.get_secret_value() if isinstance(value, SecretStr) else str(value)
        return None

    def for_tenant(self, tenant_id: str) -> TenantCredentials:
        return TenantCredentials(self, tenant_id)


@lru_cache(maxsize=8)
def _read_table(path: str, mtime_ns: int, size: int) -> dict[str, dict[str, str]]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValueError(f"{path}: expected {{tenant: {{name: secret}}}}")
    return {str(t): {str(k): str(v) for k, v in names.items()} for t, names in data.items()}
