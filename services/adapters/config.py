"""Adapter configuration from KEEL_* variables: provider URLs, per-tenant credentials, timeouts."""

from __future__ import annotations

import functools
import os
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from keel.credstore import CredentialSettings, CredentialSource, configured_credentials
from keel.settings import Settings
from keel.tooldefs.credentials import ANY_TENANT, StaticCredentials


@functools.cache
def _store_choice() -> str:
    return CredentialSettings().credentials


@functools.cache
def _configured_store() -> CredentialSource:
    # Built once per process: the encrypted store holds a connection factory and a short cache.
    return configured_credentials()


def _simulator_credentials() -> dict[str, dict[str, SecretStr]]:
    return {
        ANY_TENANT: {
            "email": SecretStr("sim-email-token"),
            "crm": SecretStr("sim-crm-token"),
            "helpdesk": SecretStr("sim-helpdesk-token"),
            "payments": SecretStr("sim-payments-token"),
        }
    }


class AdapterSettings(Settings):
    """Defaults point at the local simulators with their default tokens. The tool timeout and the
    retention horizon are the shared settings' (keel.settings)."""

    model_config = SettingsConfigDict(env_prefix="KEEL_", extra="ignore")

    email_url: str = "http://127.0.0.1:8701"
    crm_url: str = "http://127.0.0.1:8702"
    # provider -> base URL, for providers of tools defined as data (KEEL_<PROVIDER>_URL works too).
    tool_urls: dict[str, str] = Field(default_factory=dict)
    # tenant -> credential name -> secret, e.g. {"acme": {"email": "tok"}, "*": {"crm": "tok"}}; tool
    # definitions name them in headers as {credential:NAME}.
    tool_credentials: dict[str, dict[str, SecretStr]] = Field(default_factory=_simulator_credentials)
    # A JSON file of the same shape (re-read when it changes); its entries win over tool_credentials.
    tool_credentials_file: Path | None = None
    # Provider calls in flight at once per process (KEEL_TOOL_CALLS); more wait their turn, and are
    # refused without a call once their attempt's deadline has passed.
    tool_calls: int = Field(default=16, ge=1)

    def base_url(self, provider: str, default: str | None = None) -> str:
        """The provider's base URL in this deployment: KEEL_<PROVIDER>_URL, KEEL_TOOL_URLS, then the
        definition's default."""
        url = getattr(self, f"{provider}_url", None)
        if not isinstance(url, str):
            url = os.environ.get(f"KEEL_{provider.upper()}_URL") or self.tool_urls.get(provider) or default
        if not isinstance(url, str):
            raise LookupError(f"no provider URL configured for {provider!r} (KEEL_{provider.upper()}_URL)")
        return url.rstrip("/")

    def credentials(self) -> CredentialSource:
        """The credential source: KEEL_CREDENTIALS=postgres (the encrypted table) or file:PATH (see
        keel.credstore); by default configuration (KEEL_TOOL_CREDENTIALS) and an optional file."""
        if _store_choice() != "env":
            return _configured_store()
        table: dict[str, dict[str, SecretStr | str]] = {t: dict(c) for t, c in self.tool_credentials.items()}
        if self.tool_credentials_file is not None:
            from_file = StaticCredentials.from_file(self.tool_credentials_file)
            for tenant, names in from_file.table().items():
                table.setdefault(tenant, {}).update(names)
        return StaticCredentials(table)

    def credential(self, tenant_id: str, name: str) -> str | None:
        """The tenant's own secret of that name, else the shared one; never another tenant's."""
        return self.credentials().lookup(tenant_id, name)
