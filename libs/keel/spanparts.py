"""The pieces of a run's spans (keel.tracing): the span record, its deterministic ids, the keel.* and
gen_ai.* attributes, and the leaf spans of one attempt (`chat {model}` per model call, `execute_tool
{tool}` per tool call). Pure: no SDK, no clock."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.semconv.attributes import error_attributes

from keel import events as ev
from keel.contracts import RunEvent

Attrs = Mapping[str, Any]
_HEX32 = re.compile(r"[0-9a-f]{32}")
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")
STEP_FAILURES = frozenset({ev.STEP_FAILED, ev.TOOL_FAILED, ev.RETRY_SCHEDULED, ev.QUARANTINED})
STOPS = STEP_FAILURES | {ev.FAILED, ev.LOOP_DETECTED, ev.BUDGET_EXCEEDED}


@dataclass(frozen=True, slots=True)
class SpanEvent:
    name: str
    time_ns: int
    attributes: Attrs = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SpanData:
    """One span, as the exporter will send it. Ids are integers (the SDK's form); `kind` is
    "internal" or "client"; `status` is "unset", "ok" or "error" (with `status_description`)."""

    name: str
    trace_id: int
    span_id: int
    parent_span_id: int | None
    start_ns: int
    end_ns: int
    attributes: Attrs
    kind: str = "internal"
    status: str = "unset"
    status_description: str | None = None
    events: tuple[SpanEvent, ...] = ()


def derived_id(nbytes: int, *parts: object) -> int:
    """A deterministic non-zero id from coordinates. FROZEN: changing it splits re-exported traces."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:nbytes], "big") or 1


def trace_id_of(run_id: str, given: str | None) -> int:
    """The run's trace id: the one on its events when it is a W3C trace id (32 hex digits, or a whole
    traceparent), else derived from the run id (a free-form label cannot be a trace id)."""
    text = (given or "").strip().lower()
    match = _TRACEPARENT.fullmatch(text)
    hex32 = match.group(1) if match else text
    if _HEX32.fullmatch(hex32) and int(hex32, 16) != 0:
        return int(hex32, 16)
    return derived_id(16, "trace", run_id)


def run_span_id(run_id: str) -> int:
    return derived_id(8, "run", run_id)


def step_span_id(run_id: str, step: str) -> int:
    return derived_id(8, "step", run_id, step)


def attempt_span_id(run_id: str, step: str, attempt: int, call: str | None = None) -> int:
    """An attempt of a step, or of an agent step's sub-step (`call`: a turn or a tool call), which
    counts its own attempts."""
    return derived_id(8, "attempt", run_id, step, call or "", attempt)


def ns(e: RunEvent) -> int:
    return int(e.ts.timestamp() * 1_000_000) * 1000  # microsecond precision, exact integer arithmetic


def failure_class(e: RunEvent) -> str | None:
    for detail in (e.step_detail, e.tool, e.retry, e.quarantine):
        fc = getattr(detail, "failure_class", None) if detail is not None else None
        if fc:
            return str(fc)
    return None


def common_attrs(e: RunEvent) -> dict[str, Any]:
    """keel.* attributes every span of the run carries (where known)."""
    out: dict[str, Any] = {"keel.tenant": e.tenant_id, "keel.run_id": e.run_id, "keel.workflow": e.workflow}
    if e.workflow_version is not None:
        out["keel.workflow_version"] = e.workflow_version
    if e.task_id:
        out["keel.task_id"] = e.task_id
    return out


def step_attrs(events: list[RunEvent]) -> dict[str, Any]:
    first = events[0]
    out = common_attrs(first) | {"keel.step": first.step}
    keys = [e.idempotency_key for e in events if e.idempotency_key]
    if keys:
        out["keel.idempotency_key"] = keys[-1]
    return out


def commit_attrs(events: list[RunEvent]) -> dict[str, Any]:
    commits = [e for e in events if e.event == ev.STEP_COMMITTED]
    if not commits:
        return {}
    c = commits[0].commit
    out: dict[str, Any] = {"keel.commit.committed": True}
    if c is not None:
        if c.external_id:
            out["keel.commit.external_id"] = c.external_id
        out["keel.commit.duplicate"] = c.duplicate
    return out


def span_event(e: RunEvent) -> SpanEvent:
    attrs: dict[str, Any] = {"keel.event_id": e.event_id, "keel.source": e.source}
    fc = failure_class(e)
    if fc:
        attrs[error_attributes.ERROR_TYPE] = fc
    if e.error:
        attrs["keel.error"] = e.error
    if e.retry is not None:
        attrs["keel.retry.reason"] = e.retry.reason
        attrs["keel.retry.delay_ms"] = e.retry.delay_ms
    if e.call:
        attrs["keel.call"] = e.call
    return SpanEvent(e.event, ns(e), attrs)


def error_status(events: list[RunEvent], committed: bool) -> tuple[str, str | None]:
    """(status, description) of a step or attempt: an error when it failed and never committed."""
    if committed:
        return "ok", None
    failures = [e for e in events if e.event in STEP_FAILURES]
    if not failures:
        return "unset", None
    return "error", failure_class(failures[-1]) or failures[-1].event


def chat_span(trace: int, parent: int, e: RunEvent, base: dict[str, Any]) -> SpanData:
    m = e.model_call
    end = ns(e)
    start = end - (m.latency_ms or 0) * 1_000_000 if m is not None else end
    attrs = base | {gen_ai.GEN_AI_OPERATION_NAME: gen_ai.GenAiOperationNameValues.CHAT.value}
    if e.model:
        attrs[gen_ai.GEN_AI_REQUEST_MODEL] = e.model
        attrs[gen_ai.GEN_AI_RESPONSE_MODEL] = e.model
    if m is not None:
        attrs[gen_ai.GEN_AI_USAGE_INPUT_TOKENS] = m.prompt_tokens
        attrs[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS] = m.completion_tokens
        if m.provider:
            attrs[gen_ai.GEN_AI_PROVIDER_NAME] = m.provider
    if e.cost_micros is not None:
        attrs["keel.cost_micros"] = e.cost_micros
    if e.call:
        attrs["keel.call"] = e.call
    return SpanData(
        name=f"chat {e.model or 'unknown'}",
        trace_id=trace,
        span_id=derived_id(8, "chat", e.event_id),
        parent_span_id=parent,
        start_ns=start,
        end_ns=end,
        attributes=attrs,
        kind="client",
    )


def tool_spans(trace: int, parent: int, events: list[RunEvent], base: dict[str, Any]) -> list[SpanData]:
    """An execute_tool span per tool call of the attempt (one per `call` of an agent step)."""
    by_call: dict[str | None, list[RunEvent]] = {}
    for e in events:
        if e.tool is not None and e.event in (ev.TOOL_CALLED, ev.TOOL_SUCCEEDED, ev.TOOL_FAILED):
            by_call.setdefault(e.call, []).append(e)
    spans = []
    for call, group in by_call.items():
        first, last = group[0], group[-1]
        tool = first.tool.tool if first.tool is not None else "unknown"
        attrs = base | {
            gen_ai.GEN_AI_OPERATION_NAME: gen_ai.GenAiOperationNameValues.EXECUTE_TOOL.value,
            gen_ai.GEN_AI_TOOL_NAME: tool,
            gen_ai.GEN_AI_TOOL_CALL_ID: call or f"{first.step}#{first.attempt}",
        }
        if first.idempotency_key:
            attrs["keel.idempotency_key"] = first.idempotency_key
        result = last.tool if last.event != ev.TOOL_CALLED else None
        status, why = "unset", None
        if result is not None:
            if result.external_id:
                attrs["keel.tool.external_id"] = result.external_id
            if result.idempotency_mode:
                attrs["keel.tool.idempotency_mode"] = result.idempotency_mode
            attrs["keel.tool.already_committed"] = result.already_committed
            if last.event == ev.TOOL_FAILED:
                status, why = "error", result.failure_class or "tool_failed"
                attrs[error_attributes.ERROR_TYPE] = why
            else:
                status = "ok"
        start = ns(first)
        if first.event != ev.TOOL_CALLED and result is not None and result.latency_ms:
            start = ns(first) - result.latency_ms * 1_000_000
        spans.append(
            SpanData(
                name=f"execute_tool {tool}",
                trace_id=trace,
                span_id=derived_id(8, "tool", first.run_id, first.step, first.attempt, call or ""),
                parent_span_id=parent,
                start_ns=start,
                end_ns=ns(last),
                attributes=attrs | ({"keel.call": call} if call else {}),
                status=status,
                status_description=why,
                events=tuple(span_event(e) for e in group),
            )
        )
    return spans
