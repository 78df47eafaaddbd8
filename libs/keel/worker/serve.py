"""A worker group's processor: the runtime library's tool runner (keel.toolrun) calling the group's tools."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient
from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from keel.blobs import store_for
from keel.producer import client_config
from keel.serde import Serde, register_worker_topics, registry_client
from keel.settings import Settings
from keel.tooldefs import UnknownTool
from keel.tooldefs.credentials import StaticCredentials
from keel.toolrun.ledger_view import LedgerView
from keel.toolrun.processor import CommittedView, Invoker, ToolProcessor
from keel.topics import ensure_topics, worker_topics
from keel.worker.invoke import WorkerInvoker
from keel.worker.sdk import Tool


class WorkerSettings(Settings):
    """A worker's credentials, configured as the adapters' are: KEEL_TOOL_CREDENTIALS
    ({"tenant": {"NAME": "secret"}, "*": {...}}) and the JSON file KEEL_TOOL_CREDENTIALS_FILE (its
    entries win, re-read when it changes)."""

    model_config = SettingsConfigDict(env_prefix="KEEL_", extra="ignore")

    tool_credentials: dict[str, dict[str, SecretStr]] = Field(default_factory=dict)
    tool_credentials_file: Path | None = None

    def credentials(self) -> StaticCredentials:
        table: dict[str, dict[str, SecretStr | str]] = {t: dict(c) for t, c in self.tool_credentials.items()}
        if self.tool_credentials_file is not None:
            for tenant, names in StaticCredentials.from_file(self.tool_credentials_file).table().items():
                table.setdefault(tenant, {}).update(names)
        return StaticCredentials(table)


class _Credentials:
    """Read at each call, so a rotated file is picked up without a restart."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings

    def lookup(self, tenant_id: str, name: str) -> str | None:
        return self.settings.credentials().lookup(tenant_id, name)


class WorkerProcessor(ToolProcessor):
    """Serves exactly the tools of one worker group; a command for any other tool is dead-lettered with
    the reason (a worker of this group that does not have it: deploy it, then redrive)."""

    def __init__(self, group: str, tools: list[Tool[Any, Any]], ledger: CommittedView, **kw: Any) -> None:
        settings = WorkerSettings()
        creds = _Credentials(settings)
        self.invokers = {t.tool: WorkerInvoker(t, creds, settings.tool_timeout_s) for t in tools}
        self.source = f"worker:{group}"
        super().__init__(ledger, self._invoker, **kw)

    def _invoker(self, tool: str) -> Invoker:
        try:
            return self.invokers[tool]
        except KeyError:
            raise UnknownTool(f"no tool {tool!r} in this worker; it serves {sorted(self.invokers)}") from None


def ensure_group_topic(settings: Settings, group: str) -> None:
    """The group's command topic and its contract's subject, made if missing (the executor makes them
    too, for every group the definitions name)."""
    admin = AdminClient(client_config(settings))
    specs = worker_topics(settings, [group])
    ensure_topics(admin, specs, settings.topic_replication)
    register_worker_topics(registry_client(settings.schema_registry_url), [s.name for s in specs])


def processor_factory(group: str, tools: list[Tool[Any, Any]]) -> Any:
    def make(settings: Settings, serde: Serde) -> WorkerProcessor:
        view = LedgerView(settings, serde, horizon_s=settings.retention_horizon_s)
        return WorkerProcessor(group, tools, view, blobs=store_for(settings))

    return make
