"""Adapters shell: tool commands in; provider calls (outside any transaction) and tool facts out."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

import httpx

from keel.contracts import ToolCommand
from keel.serde import Serde
from keel.settings import Settings
from keel.topics import RUN_EVENTS, TOOL_COMMANDS
from keel.txloop import AfterCommit, Handled, Output, Processor, Record, Reject
from services.adapters import facts
from services.adapters.catalog import UnknownTool, get_adapter
from services.adapters.client import call_tool
from services.adapters.config import AdapterSettings
from services.adapters.ledger_view import LedgerView

TOPICS = [TOOL_COMMANDS]


class AdapterProcessor(Processor):
    concurrency = 8  # model and provider calls wait on the network

    def __init__(self, settings: AdapterSettings, ledger: LedgerView, http: httpx.Client) -> None:
        self.settings, self.ledger, self.http = settings, ledger, http

    def handle(self, record: Record) -> Sequence[Handled]:
        cmd: ToolCommand = record.value
        try:
            adapter = get_adapter(cmd.tool)
        except UnknownTool as exc:
            raise Reject(str(exc), "unknown_tool") from None
        mode = adapter.idempotency_mode
        committed = self.ledger.get(cmd.idempotency_key)
        if committed is not None:
            fact = facts.already_committed(cmd, mode, committed.external_id, None, _now())
            return [Output(RUN_EVENTS, cmd.run_id, fact)]
        payload = json.loads(cmd.payload_json)

        def call() -> list[Output]:
            result = call_tool(adapter, payload, cmd.idempotency_key, cmd.tenant_id, self.settings, self.http)
            return [Output(RUN_EVENTS, cmd.run_id, facts.tool_result(cmd, mode, result, _now()))]

        # tool_called commits (with the command's offset) before the call: if this process dies during
        # the call, the command is not redelivered; the scheduler's step timeout sees tool_called and
        # retries only what the adapter's idempotency mode makes safe to repeat.
        return [Output(RUN_EVENTS, cmd.run_id, facts.tool_called(cmd, mode, _now())), AfterCommit(call)]


def _now() -> int:
    return int(time.time() * 1000)


def make_processor(settings: Settings, serde: Serde) -> AdapterProcessor:
    # trust_env=False: a proxy configured for the internet must not see calls to loopback providers.
    return AdapterProcessor(AdapterSettings(), LedgerView(settings, serde), httpx.Client(trust_env=False))
