"""Adapters shell: tool commands in; provider calls (outside any transaction) and tool facts out."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

import httpx
from confluent_kafka import TopicPartition

import keel.events as ev
from keel.background import BackgroundCalls
from keel.blobs import BlobMissing, BlobStore, store_for
from keel.breaker import BreakerPolicy, BreakerRegistry, Rejection, Transition
from keel.claimcheck import resolved_command
from keel.contracts import LedgerRecord, ToolCommand
from keel.definitions.tools import live_tools
from keel.serde import Serde
from keel.settings import Settings, get_settings
from keel.topics import RUN_EVENTS, TOOL_COMMANDS
from keel.txloop import Handled, Output, Processor, Record, Reject
from keel.vocab import RATE_LIMITED, TRANSIENT, VALIDATION
from services.adapters import catalog, facts
from services.adapters.base import Adapter, Effect, ToolRequest, ToolResult
from services.adapters.catalog import UnknownTool, get_adapter
from services.adapters.client import call_tool
from services.adapters.config import AdapterSettings
from services.adapters.inflight import KeyGate
from services.adapters.ledger_view import LedgerView

TOPICS = [TOOL_COMMANDS]
# A failure class the breaker does not count: recording a call that was blocked before it reached the
# provider frees its probe slot without judging the provider.
_SAYS_NOTHING = VALIDATION


class CommittedView(Protocol):
    """What the processor needs of the ledger: the commit of a key, if it holds one (a dict-like fake
    satisfies it in tests)."""

    def get(self, key: str) -> LedgerRecord | None: ...


def deadline_ms(cmd: ToolCommand) -> int | None:
    deadline: datetime | None = cmd.deadline
    return None if deadline is None else int(deadline.timestamp() * 1000)


class AdapterProcessor(Processor):
    """Provider calls run on background workers (keel.background), as the executor's model calls do: a
    call starts once the batch with its `tool_called` (and the command's offset) has committed, the
    loop goes on meanwhile, and the result commits with a later turn's batch. A batch no longer waits
    for its slowest call, and results need no transaction of their own."""

    def __init__(
        self,
        settings: AdapterSettings,
        ledger: CommittedView,
        http: httpx.Client,
        breakers: BreakerRegistry | None = None,
        blobs: BlobStore | None = None,
        calls: BackgroundCalls | None = None,
    ) -> None:
        self.settings, self.ledger, self.http = settings, ledger, http
        self.breakers = breakers or BreakerRegistry(_breaker_policy())
        self.in_flight = KeyGate()
        self.blobs = blobs or store_for(get_settings())
        self.calls = calls or BackgroundCalls(settings.tool_calls, "tool-call")

    def handle(self, record: Record) -> Sequence[Handled]:
        cmd: ToolCommand = record.value
        try:
            adapter = get_adapter(cmd.tool)
        except UnknownTool as exc:
            raise Reject(str(exc), "unknown_tool") from None
        mode = adapter.idempotency_mode
        committed = self.ledger.get(cmd.idempotency_key)
        if committed is not None:
            fact = facts.already_committed(
                cmd, mode, committed.external_id, committed.output_json, ev.now_ms(), committed.output_ref
            )
            return [Output(RUN_EVENTS, cmd.run_id, fact)]
        now = ev.now_ms()
        blocked = self._blocked(cmd, now, "the command was handled")
        if blocked is not None:  # nothing called: no tool_called, only the fact saying why
            return [Output(RUN_EVENTS, cmd.run_id, facts.blocked(cmd, mode, blocked, TRANSIENT, now))]
        try:  # a payload above the blob threshold travels by reference: read it back
            cmd = resolved_command(self.blobs, cmd)
        except BlobMissing as exc:
            return [Output(RUN_EVENTS, cmd.run_id, facts.payload_missing(cmd, mode, str(exc), now))]
        request = ToolRequest(
            json.loads(cmd.payload_json),
            cmd.idempotency_key,
            Effect(cmd.tenant_id, cmd.run_id, cmd.step),
            deadline_ms(cmd),
        )

        def call() -> list[Output]:
            # One attempt per key at a time: attempts 1..n of a key can sit in one batch (the adapters
            # lagged past the step's timeout), and their calls run in parallel after the commit.
            if not self.in_flight.enter(cmd.idempotency_key):
                reason = "another attempt of this idempotency key is in flight here: provider not called"
                return [
                    Output(RUN_EVENTS, cmd.run_id, facts.blocked(cmd, mode, reason, TRANSIENT, ev.now_ms()))
                ]
            try:
                before, result, after = self._call(adapter, request, cmd)
            finally:
                self.in_flight.leave(cmd.idempotency_key)
            circuit = [Output(RUN_EVENTS, cmd.run_id, facts.circuit(cmd, t, ev.now_ms())) for t in before]
            outcome = Output(RUN_EVENTS, cmd.run_id, facts.tool_result(cmd, mode, result, ev.now_ms()))
            later = [Output(RUN_EVENTS, cmd.run_id, facts.circuit(cmd, t, ev.now_ms())) for t in after]
            return [*circuit, outcome, *later]

        # tool_called commits (with the command's offset) before the call: if this process dies during
        # the call, the command is not redelivered; the scheduler's step timeout sees tool_called and
        # retries only what the adapter's idempotency mode makes safe to repeat.
        self.calls.stage((record.topic, record.partition), call)
        return [Output(RUN_EVENTS, cmd.run_id, facts.tool_called(cmd, mode, now))]

    # -- the background calls, in the loop's terms ----------------------------------------------------
    def max_wait_s(self, idle_wait_s: float) -> float:
        # A result that lands while the loop waits for messages would wait with it.
        return min(idle_wait_s, 0.005) if self.calls.busy() else idle_wait_s

    def tick(self, now_ms: int) -> Sequence[Output]:
        return self.calls.take()  # finished calls' facts, committed in this turn's transaction

    def on_commit(self) -> None:
        self.calls.committed()

    def on_abort(self) -> None:
        self.calls.aborted()

    def on_revoke(self, partitions: list[TopicPartition]) -> None:
        # Calls not yet started belong to the partitions' new owner: the step's deadline retries them.
        self.calls.drop((tp.topic, tp.partition or 0) for tp in partitions)

    def _blocked(self, cmd: ToolCommand, now_ms: int, when: str) -> str | None:
        """Why this command must not reach the provider at all, or None."""
        deadline = deadline_ms(cmd)
        if deadline is not None and now_ms >= deadline:
            return f"deadline passed {now_ms - deadline} ms before {when}: provider not called"
        if self.in_flight.held(cmd.idempotency_key):
            return "another attempt of this idempotency key is in flight here: provider not called"
        return None

    def _call(
        self, adapter: Adapter, request: ToolRequest, cmd: ToolCommand
    ) -> tuple[list[Transition], ToolResult, list[Transition]]:
        """The provider call behind its circuit breaker: while the breaker is open, nothing is sent.
        Returns the breaker's state changes before the call (to half-open), the result, and after it."""
        late = self._blocked_by_deadline(request, "the call could start")
        if late is not None:  # after-commit work can start late: never take a probe slot for nothing
            return [], late, []
        breaker = self.breakers.get(adapter.name)
        permit = breaker.before_call(ev.now_ms())
        if isinstance(permit, Rejection):
            reason = f"circuit open for {adapter.name}: provider not called"
            refused = ToolResult(
                ok=False,
                failure_class=RATE_LIMITED,
                error=f"{cmd.tool}: {reason}",
                retry_after_ms=permit.retry_after_ms,
                blocked_reason=reason,
            )
            return [], refused, []
        result = call_tool(adapter, request, self.settings, self.http)
        if result.blocked_reason is not None:
            after = breaker.record(permit, False, _SAYS_NOTHING, ev.now_ms())
        else:
            after = breaker.record(permit, result.ok, result.failure_class, ev.now_ms())
        return ([permit.transition] if permit.transition else []), result, after

    @staticmethod
    def _blocked_by_deadline(request: ToolRequest, when: str) -> ToolResult | None:
        now = ev.now_ms()
        if request.deadline_ms is None or now < request.deadline_ms:
            return None
        reason = f"deadline passed {now - request.deadline_ms} ms before {when}: provider not called"
        return ToolResult(ok=False, failure_class=TRANSIENT, error=reason, blocked_reason=reason)


def _breaker_policy() -> BreakerPolicy:
    return BreakerPolicy(
        failure_threshold=int(os.environ.get("KEEL_BREAKER_FAILURES", "5")),
        window_ms=int(os.environ.get("KEEL_BREAKER_WINDOW_MS", "10000")),
        open_ms=int(os.environ.get("KEEL_BREAKER_OPEN_MS", "5000")),
    )


def make_processor(settings: Settings, serde: Serde) -> AdapterProcessor:
    # trust_env=False: a proxy configured for the internet must not see calls to loopback providers.
    tools = AdapterSettings()
    catalog.follow(live_tools(settings))  # tools registered at runtime get an adapter on first use
    view = LedgerView(settings, serde, horizon_s=tools.retention_horizon_s)
    return AdapterProcessor(tools, view, httpx.Client(trust_env=False), blobs=store_for(settings))
