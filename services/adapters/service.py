"""Adapters shell: tool commands in; provider calls (outside any transaction) and tool facts out."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import httpx

import keel.events as ev
from keel.breaker import BreakerPolicy, BreakerRegistry, Rejection, Transition
from keel.contracts import ToolCommand
from keel.serde import Serde
from keel.settings import Settings
from keel.topics import RUN_EVENTS, TOOL_COMMANDS
from keel.txloop import AfterCommit, Handled, Output, Processor, Record, Reject
from services.adapters import facts
from services.adapters.base import Adapter, ToolResult
from services.adapters.catalog import UnknownTool, get_adapter
from services.adapters.client import call_tool
from services.adapters.config import AdapterSettings
from services.adapters.ledger_view import LedgerView

TOPICS = [TOOL_COMMANDS]


class AdapterProcessor(Processor):
    concurrency = 8  # model and provider calls wait on the network
    max_batch = 64  # bounds how long one batch can wait on slow providers

    def __init__(
        self,
        settings: AdapterSettings,
        ledger: LedgerView,
        http: httpx.Client,
        breakers: BreakerRegistry | None = None,
    ) -> None:
        self.settings, self.ledger, self.http = settings, ledger, http
        self.breakers = breakers or BreakerRegistry(_breaker_policy())

    def handle(self, record: Record) -> Sequence[Handled]:
        cmd: ToolCommand = record.value
        try:
            adapter = get_adapter(cmd.tool)
        except UnknownTool as exc:
            raise Reject(str(exc), "unknown_tool") from None
        mode = adapter.idempotency_mode
        committed = self.ledger.get(cmd.idempotency_key)
        if committed is not None:
            fact = facts.already_committed(cmd, mode, committed.external_id, None, ev.now_ms())
            return [Output(RUN_EVENTS, cmd.run_id, fact)]
        payload = json.loads(cmd.payload_json)

        def call() -> list[Output]:
            before, result, after = self._call(adapter, payload, cmd)
            circuit = [Output(RUN_EVENTS, cmd.run_id, facts.circuit(cmd, t, ev.now_ms())) for t in before]
            outcome = Output(RUN_EVENTS, cmd.run_id, facts.tool_result(cmd, mode, result, ev.now_ms()))
            later = [Output(RUN_EVENTS, cmd.run_id, facts.circuit(cmd, t, ev.now_ms())) for t in after]
            return [*circuit, outcome, *later]

        # tool_called commits (with the command's offset) before the call: if this process dies during
        # the call, the command is not redelivered; the scheduler's step timeout sees tool_called and
        # retries only what the adapter's idempotency mode makes safe to repeat.
        return [Output(RUN_EVENTS, cmd.run_id, facts.tool_called(cmd, mode, ev.now_ms())), AfterCommit(call)]

    def _call(
        self, adapter: Adapter[Any, Any], payload: Any, cmd: ToolCommand
    ) -> tuple[list[Transition], ToolResult, list[Transition]]:
        """The provider call behind its circuit breaker: while the breaker is open, nothing is sent.
        Returns the breaker's state changes before the call (to half-open), the result, and after it."""
        breaker = self.breakers.get(adapter.name)
        permit = breaker.before_call(ev.now_ms())
        if isinstance(permit, Rejection):
            error = f"circuit open for {adapter.name}: provider not called"
            refused = ToolResult(
                ok=False, failure_class="rate_limited", error=error, retry_after_ms=permit.retry_after_ms
            )
            return [], refused, []
        result = call_tool(adapter, payload, cmd.idempotency_key, cmd.tenant_id, self.settings, self.http)
        after = breaker.record(permit, result.ok, result.failure_class, ev.now_ms())
        return ([permit.transition] if permit.transition else []), result, after


def _breaker_policy() -> BreakerPolicy:
    return BreakerPolicy(
        failure_threshold=int(os.environ.get("KEEL_BREAKER_FAILURES", "5")),
        window_ms=int(os.environ.get("KEEL_BREAKER_WINDOW_MS", "10000")),
        open_ms=int(os.environ.get("KEEL_BREAKER_OPEN_MS", "5000")),
    )


def make_processor(settings: Settings, serde: Serde) -> AdapterProcessor:
    # trust_env=False: a proxy configured for the internet must not see calls to loopback providers.
    return AdapterProcessor(AdapterSettings(), LedgerView(settings, serde), httpx.Client(trust_env=False))
