"""Adapters shell: tool commands in; provider calls (outside any transaction) and tool facts out. The loop
body is the runtime library's tool runner (keel.toolrun); this service gives it HTTP tools from their
definitions."""

from __future__ import annotations

import httpx

from keel.background import BackgroundCalls
from keel.blobs import BlobStore, store_for
from keel.breaker import BreakerRegistry
from keel.definitions.tools import live_tools
from keel.serde import Serde
from keel.settings import Settings
from keel.toolrun.ledger_view import LedgerView
from keel.toolrun.processor import CommittedView, Invoker, ToolProcessor, deadline_ms
from keel.toolrun.result import ToolRequest, ToolResult
from keel.topics import TOOL_COMMANDS
from services.adapters import catalog
from services.adapters.base import Adapter
from services.adapters.catalog import get_adapter
from services.adapters.client import call_tool
from services.adapters.config import AdapterSettings

__all__ = ["TOPICS", "AdapterProcessor", "CommittedView", "HttpInvoker", "deadline_ms", "make_processor"]

TOPICS = [TOOL_COMMANDS]


class HttpInvoker:
    """An HTTP tool as the tool runner calls it: `call_tool` with this deployment's settings and client."""

    def __init__(self, adapter: Adapter, settings: AdapterSettings, http: httpx.Client) -> None:
        self.adapter, self.settings, self.http = adapter, settings, http
        self.name, self.idempotency_mode = adapter.name, adapter.idempotency_mode
        self.fee_usd = adapter.fee_usd  # on the tool_called of each call: the provider charges per call

    def invoke(self, request: ToolRequest) -> ToolResult:
        return call_tool(self.adapter, request, self.settings, self.http)


class AdapterProcessor(ToolProcessor):
    def __init__(
        self,
        settings: AdapterSettings,
        ledger: CommittedView,
        http: httpx.Client,
        breakers: BreakerRegistry | None = None,
        blobs: BlobStore | None = None,
        calls: BackgroundCalls | None = None,
    ) -> None:
        self.settings, self.http = settings, http
        calls = calls or BackgroundCalls(settings.tool_calls, "tool-call")
        super().__init__(ledger, self._invoker, breakers, blobs, calls)

    def _invoker(self, tool: str) -> Invoker:
        return HttpInvoker(get_adapter(tool), self.settings, self.http)


def make_processor(settings: Settings, serde: Serde) -> AdapterProcessor:
    # trust_env=False: a proxy configured for the internet must not see calls to loopback providers.
    tools = AdapterSettings()
    catalog.follow(live_tools(settings))  # tools registered at runtime get an adapter on first use
    view = LedgerView(settings, serde, horizon_s=tools.retention_horizon_s)
    return AdapterProcessor(tools, view, httpx.Client(trust_env=False), blobs=store_for(settings))
