"""The tool runner's loop body, whatever serves the tools: tool commands in, calls outside any transaction,
tool facts out. The adapters service (HTTP tools from definitions) and tool workers (functions in a user's
process, keel.worker) both run this one processor; only the `Invoker` of a tool differs."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol

import keel.events as ev
from keel import provenance
from keel.background import BackgroundCalls, BackgroundProcessor
from keel.blobs import BlobMissing, BlobStore, store_for
from keel.breaker import BreakerPolicy, BreakerRegistry, Rejection, Transition
from keel.claimcheck import resolved_command
from keel.contracts import LedgerRecord, ToolCommand
from keel.settings import get_settings
from keel.tooldefs import UnknownTool
from keel.toolrun import facts
from keel.toolrun.inflight import KeyGate
from keel.toolrun.result import Effect, ToolRequest, ToolResult
from keel.topics import RUN_EVENTS
from keel.txtypes import Handled, Output, Record, Reject
from keel.vocab import RATE_LIMITED, TRANSIENT, VALIDATION

# A failure class the breaker does not count: recording a call that was blocked before it reached the
# provider frees its probe slot without judging the provider.
_SAYS_NOTHING = VALIDATION


class CommittedView(Protocol):
    """What the processor needs of the ledger: the commit of a key, if it holds one (a dict-like fake
    satisfies it in tests)."""

    def get(self, key: str) -> LedgerRecord | None: ...


class Invoker(Protocol):
    """One tool as a runner calls it: its identity, its idempotency mode, and the call itself, which turns
    every outcome into a ToolResult (never raises for anything the provider or the tool's code did)."""

    @property
    def name(self) -> str: ...  # the breaker's name

    @property
    def idempotency_mode(self) -> str: ...

    def invoke(self, request: ToolRequest) -> ToolResult: ...


# name@version -> its invoker; raises UnknownTool for a tool this runner does not serve.
Resolver = Callable[[str], Invoker]


def deadline_ms(cmd: ToolCommand) -> int | None:
    deadline: datetime | None = cmd.deadline
    return None if deadline is None else int(deadline.timestamp() * 1000)


def breaker_policy() -> BreakerPolicy:
    return BreakerPolicy(
        failure_threshold=int(os.environ.get("KEEL_BREAKER_FAILURES", "5")),
        window_ms=int(os.environ.get("KEEL_BREAKER_WINDOW_MS", "10000")),
        open_ms=int(os.environ.get("KEEL_BREAKER_OPEN_MS", "5000")),
    )


class ToolProcessor(BackgroundProcessor):
    """Calls run on background workers (keel.background), as the executor's model calls do: a call starts
    once the batch with its `tool_called` (and the command's offset) has committed, the loop goes on
    meanwhile, and the result commits with a later turn's batch. A batch never waits for its slowest
    call, and results need no transaction of their own."""

    concurrency = 8  # provider calls wait on the network
    max_batch = 64  # bounds how long one batch can wait on slow providers
    source = facts.ADAPTERS  # names the runner on its facts

    def __init__(
        self,
        ledger: CommittedView,
        resolve: Resolver,
        breakers: BreakerRegistry | None = None,
        blobs: BlobStore | None = None,
        calls: BackgroundCalls | None = None,
    ) -> None:
        self.ledger, self.resolve = ledger, resolve
        self.breakers = breakers or BreakerRegistry(breaker_policy())
        self.in_flight = KeyGate()
        self.blobs = blobs or store_for(get_settings())
        # Calls in flight at once per process (KEEL_TOOL_CALLS); more wait their turn, and are refused
        # without a call once their attempt's deadline has passed.
        self.calls = calls or BackgroundCalls(int(os.environ.get("KEEL_TOOL_CALLS", "16")), "tool-call")

    def handle(self, record: Record) -> Sequence[Handled]:
        cmd: ToolCommand = record.value
        src = self.source
        problem = provenance.command_problem(cmd.tenant_id, cmd.idempotency_key)
        if problem:  # before the ledger, the credentials or the tool: nothing of either tenant is read
            raise Reject(problem, provenance.TENANT_MISMATCH)
        try:
            invoker = self.resolve(cmd.tool)
        except UnknownTool as exc:
            raise Reject(str(exc), "unknown_tool") from None
        mode = invoker.idempotency_mode
        committed = self.ledger.get(cmd.idempotency_key)
        if committed is not None:
            fact = facts.already_committed(
                cmd,
                mode,
                committed.external_id,
                committed.output_json,
                ev.now_ms(),
                committed.output_ref,
                src,
            )
            return [Output(RUN_EVENTS, cmd.run_id, fact)]
        now = ev.now_ms()
        blocked = self._blocked(cmd, now, "the command was handled")
        if blocked is not None:  # nothing called: no tool_called, only the fact saying why
            return [Output(RUN_EVENTS, cmd.run_id, facts.blocked(cmd, mode, blocked, TRANSIENT, now, src))]
        try:  # a payload above the blob threshold travels by reference: read it back
            cmd = resolved_command(self.blobs, cmd)
        except BlobMissing as exc:
            return [Output(RUN_EVENTS, cmd.run_id, facts.payload_missing(cmd, mode, str(exc), now, src))]
        request = ToolRequest(
            json.loads(cmd.payload_json),
            cmd.idempotency_key,
            Effect(cmd.tenant_id, cmd.run_id, cmd.step, cmd.call),
            deadline_ms(cmd),
            (cmd.approval.input_ref, cmd.approval.idempotency_key) if cmd.approval is not None else None,
        )

        def call() -> list[Output]:
            # One attempt per key at a time: attempts 1..n of a key can sit in one batch (the runner
            # lagged past the step's timeout), and their calls run in parallel after the commit.
            if not self.in_flight.enter(cmd.idempotency_key):
                reason = "another attempt of this idempotency key is in flight here: provider not called"
                fact = facts.blocked(cmd, mode, reason, TRANSIENT, ev.now_ms(), src)
                return [Output(RUN_EVENTS, cmd.run_id, fact)]
            try:
                before, result, after = self._call(invoker, request, cmd)
            finally:
                self.in_flight.leave(cmd.idempotency_key)
            circuit = [
                Output(RUN_EVENTS, cmd.run_id, facts.circuit(cmd, t, ev.now_ms(), src)) for t in before
            ]
            outcome = Output(RUN_EVENTS, cmd.run_id, facts.tool_result(cmd, mode, result, ev.now_ms(), src))
            later = [Output(RUN_EVENTS, cmd.run_id, facts.circuit(cmd, t, ev.now_ms(), src)) for t in after]
            return [*circuit, outcome, *later]

        # tool_called commits (with the command's offset) before the call: if this process dies during
        # the call, the command is not redelivered; the scheduler's step timeout sees tool_called and
        # retries only what the tool's idempotency mode makes safe to repeat.
        self.calls.stage((record.topic, record.partition), call)
        fee = getattr(invoker, "fee_usd", None)  # a paid tool's invoker says what one call costs
        return [Output(RUN_EVENTS, cmd.run_id, facts.tool_called(cmd, mode, now, src, fee))]

    def _blocked(self, cmd: ToolCommand, now_ms: int, when: str) -> str | None:
        """Why this command must not reach the provider at all, or None."""
        deadline = deadline_ms(cmd)
        if deadline is not None and now_ms >= deadline:
            return f"deadline passed {now_ms - deadline} ms before {when}: provider not called"
        if self.in_flight.held(cmd.idempotency_key):
            return "another attempt of this idempotency key is in flight here: provider not called"
        return None

    def _call(
        self, invoker: Invoker, request: ToolRequest, cmd: ToolCommand
    ) -> tuple[list[Transition], ToolResult, list[Transition]]:
        """The call behind its circuit breaker: while the breaker is open, nothing is sent. Returns the
        breaker's state changes before the call (to half-open), the result, and after it."""
        late = self._blocked_by_deadline(request, "the call could start")
        if late is not None:  # after-commit work can start late: never take a probe slot for nothing
            return [], late, []
        breaker = self.breakers.get(invoker.name)
        permit = breaker.before_call(ev.now_ms())
        if isinstance(permit, Rejection):
            reason = f"circuit open for {invoker.name}: provider not called"
            refused = ToolResult(
                ok=False,
                failure_class=RATE_LIMITED,
                error=f"{cmd.tool}: {reason}",
                retry_after_ms=permit.retry_after_ms,
                blocked_reason=reason,
            )
            return [], refused, []
        result = invoker.invoke(request)
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
