"""Pure mapping from a tool command and its result to the facts a tool runner (the adapters service, a
tool worker) publishes; `source` names the runner on every fact."""

from __future__ import annotations

from typing import Any

import keel.events as ev
from keel.breaker import Transition
from keel.contracts import RunEvent, ToolCommand, ToolDetail
from keel.pricing import usd_to_micros
from keel.toolrun.result import ToolResult
from keel.vocab import VALIDATION

ADAPTERS = "adapters"


def _event(cmd: ToolCommand, kind: str, now_ms: int, source: str, **fields: Any) -> RunEvent:
    return ev.step_fact(cmd, kind, now_ms, source, **fields)


def tool_called(
    cmd: ToolCommand, mode: str, now_ms: int, source: str = ADAPTERS, fee_usd: float | None = None
) -> RunEvent:
    """The call is about to be made. A paid tool's fee is on this fact (cost_usd_est, and exactly in
    cost_micros): its provider charges per call made, whatever the call's outcome. A call blocked after
    this fact (its deadline passed, its circuit open) is counted all the same: budgets over-count, never
    under-count."""
    return _event(
        cmd,
        ev.TOOL_CALLED,
        now_ms,
        source,
        cost_usd_est=fee_usd or None,
        cost_micros=usd_to_micros(fee_usd) if fee_usd else None,
        input_json=cmd.payload_json,
        input_ref=ev.content_ref_of_json(cmd.payload_json),
        tool=ToolDetail(tool=cmd.tool, idempotency_mode=mode),
    )


def tool_result(
    cmd: ToolCommand, mode: str, result: ToolResult, now_ms: int, source: str = ADAPTERS
) -> RunEvent:
    detail = ToolDetail(
        tool=cmd.tool,
        idempotency_mode=mode,
        external_id=result.external_id,
        failure_class=result.failure_class,
        http_status=result.http_status,
        latency_ms=result.latency_ms,
        retry_after_ms=result.retry_after_ms,
        effect_accepted=True if result.effect_accepted else None,
        blocked_reason=result.blocked_reason,
    )
    if not result.ok and result.evidence is not None:
        # The provider's own answer, kept as evidence of an effect whose answer broke the contract.
        out_json, out_ref = ev.inline(result.evidence)
        return _event(
            cmd,
            ev.TOOL_FAILED,
            now_ms,
            source,
            error=result.error,
            output_json=out_json,
            output_ref=out_ref,
            tool=detail,
        )
    if not result.ok:
        return _event(cmd, ev.TOOL_FAILED, now_ms, source, error=result.error, tool=detail)
    out_json, out_ref = ev.inline(result.output)
    return _event(
        cmd, ev.TOOL_SUCCEEDED, now_ms, source, output_json=out_json, output_ref=out_ref, tool=detail
    )


def already_committed(
    cmd: ToolCommand,
    mode: str,
    external_id: str | None,
    output_json: str | None,
    now_ms: int,
    output_ref: str | None = None,
    source: str = ADAPTERS,
) -> RunEvent:
    """The ledger holds a commit for this key: succeed with it (and its committed output), without
    calling the provider."""
    return _event(
        cmd,
        ev.TOOL_SUCCEEDED,
        now_ms,
        source,
        output_json=output_json,
        output_ref=output_ref,
        tool=ToolDetail(
            tool=cmd.tool, idempotency_mode=mode, external_id=external_id, already_committed=True
        ),
    )


def blocked(
    cmd: ToolCommand, mode: str, reason: str, failure_class: str, now_ms: int, source: str = ADAPTERS
) -> RunEvent:
    """The provider was not called for this attempt (deadline passed, the key's attempt in flight): a
    tool_failed whose blocked_reason says why, so it is not counted as a used attempt."""
    return _event(
        cmd,
        ev.TOOL_FAILED,
        now_ms,
        source,
        error=f"{cmd.tool}: {reason}",
        tool=ToolDetail(
            tool=cmd.tool, idempotency_mode=mode, failure_class=failure_class, blocked_reason=reason
        ),
    )


def circuit(cmd: ToolCommand, transition: Transition, now_ms: int, source: str = ADAPTERS) -> RunEvent:
    """A provider's circuit breaker changed state during this command's call (circuit_opened, ...)."""
    return _event(
        cmd, transition.event_type, now_ms, source, error=transition.reason, tool=ToolDetail(tool=cmd.tool)
    )


def payload_missing(cmd: ToolCommand, mode: str, error: str, now_ms: int, source: str = ADAPTERS) -> RunEvent:
    """The command's payload travelled by reference and its blob is gone: the provider is not called
    (with nothing, or a null, in its place), and no retry can bring it back."""
    return _event(
        cmd,
        ev.TOOL_FAILED,
        now_ms,
        source,
        error=f"{cmd.tool}: the payload cannot be read: {error}: provider not called",
        tool=ToolDetail(tool=cmd.tool, idempotency_mode=mode, failure_class=VALIDATION),
    )
