"""Adapter configuration from KEEL_* variables: provider URLs, per-tenant credentials, timeouts."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from keel.settings import Settings

# The shared entry: used by every tenant that has no credential of its own for a tool.
ANY_TENANT = "*"


def _simulator_credentials() -> dict[str, dict[str, SecretStr]]:
    return {ANY_TENANT: {"email": SecretStr("sim-email-token"), "crm": SecretStr("sim-crm-token")}}


class AdapterSettings(Settings):
    """Defaults point at the local simulators with their default tokens. The tool timeout and the
    retention horizon are the shared settings' (keel.settings)."""

    model_config = SettingsConfigDict(env_prefix="KEEL_", extra="ignore")

    email_url: str = "http://127.0.0.1:8701"
    crm_url: str = "http://127.0.0.1:8702"
    # tenant -> adapter name -> bearer token, e.g. {"acme": {"email": "tok"}, "*": {"crm": "tok"}}.
    tool_credentials: dict[str, dict[str, SecretStr]] = Field(default_factory=_simulator_credentials)
    # Provider calls in flight at once per process (KEEL_TOOL_CALLS); more wait their turn, and are
    # refused without a call once their attempt's deadline has passed.
    tool_calls: int = Field(default=16, ge=1)

    def base_url(self, adapter_name: str) -> str:
        url = getattr(self, f"{adapter_name}_url", None)
        if not isinstance(url, str):
            raise LookupError(f"no provider URL configured for adapter {adapter_name!r}")
        return url.rstrip("/")

    def credential(self, tenant_id: str, adapter_name: str) -> str | None:
        """The tenant's own token for the adapter, else the shared one; never another tenant's."""
        for owner in (tenant_id, ANY_TENANT):
            token = self.tool_credentials.get(owner, {}).get(adapter_name)
            if token is not None:
                return token.get_secret_value()
        return None
