"""A run's OpenTelemetry spans, built from its events alone (pure: no SDK, no clock, no broker).

The log is the source: whichever process crashed, the same events give the same spans, with the same
ids. Span ids are derived from the run, step, attempt and event coordinates (first 8 bytes of a
sha256), so a span exported twice (at-least-once) carries the same ids both times and its children
link to it even when exported in another batch. Span names and gen_ai.* attributes follow the
OpenTelemetry GenAI semantic conventions where one applies (`chat {model}`, `execute_tool {tool}`,
`invoke_agent {agent}`); the run, step and attempt spans are Keel's own (`keel.run`, `keel.step`,
`keel.attempt`). Tree: run > step (an agent step is its `invoke_agent` span) > attempt > chat |
execute_tool. Every other event becomes a span event on the most specific span it belongs to.
"""

from __future__ import annotations

from collections.abc import Iterable

from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.semconv.attributes import error_attributes

from keel import events as ev
from keel.contracts import RunEvent
from keel.spanparts import (
    STOPS,
    SpanData,
    SpanEvent,
    attempt_span_id,
    chat_span,
    commit_attrs,
    common_attrs,
    derived_id,
    error_status,
    failure_class,
    ns,
    run_span_id,
    span_event,
    step_attrs,
    step_span_id,
    tool_spans,
    trace_id_of,
)

__all__ = [
    "SpanData",
    "SpanEvent",
    "attempt_span_id",
    "derived_id",
    "run_span_id",
    "spans_of",
    "step_span_id",
    "trace_id_of",
]


def _attempt(trace: int, parent: int, events: list[RunEvent]) -> list[SpanData]:
    first = events[0]
    step, attempt, call = str(first.step), first.attempt, first.call
    sid = attempt_span_id(first.run_id, step, attempt, call)
    base = step_attrs(events) | {"keel.attempt": attempt}
    if call:
        base["keel.call"] = call
    agent = next((e.agent_id for e in events if e.agent_id), None)  # the executor names it on model_called
    if agent:
        base["keel.agent_id"] = agent
    children = [chat_span(trace, sid, e, base) for e in events if e.event == ev.MODEL_CALLED]
    children += tool_spans(trace, sid, events, base)
    commit = commit_attrs(events)
    status, why = error_status(events, bool(commit))
    attrs = base | commit | ({error_attributes.ERROR_TYPE: why} if status == "error" and why else {})
    own = [e for e in events if e.event != ev.MODEL_CALLED and e.tool is None]
    span = SpanData(
        name=f"keel.attempt {step}",
        trace_id=trace,
        span_id=sid,
        parent_span_id=parent,
        start_ns=min([ns(events[0])] + [c.start_ns for c in children]),
        end_ns=max([ns(events[-1])] + [c.end_ns for c in children]),
        attributes=attrs,
        status=status,
        status_description=why,
        events=tuple(span_event(e) for e in own),
    )
    return [span, *children]


def _kind(events: list[RunEvent]) -> str | None:
    if any(e.call for e in events):
        return "agent"  # only an agent step has sub-steps
    kinds = [e.step_detail.kind for e in events if e.step_detail is not None and e.step_detail.kind]
    return kinds[0] if kinds else None


def _step(trace: int, parent: int, events: list[RunEvent]) -> list[SpanData]:
    """The step's span and its attempts'. An agent step's own facts (its answer's commit) have no
    `call`; its turns and tool calls each count their attempts, so an attempt is (call, number)."""
    first = events[0]
    step = str(first.step)
    sid = step_span_id(first.run_id, step)
    attempts: dict[tuple[str, int], list[RunEvent]] = {}
    for e in events:
        if e.attempt > 0:
            attempts.setdefault((e.call or "", e.attempt), []).append(e)
    built = {at: _attempt(trace, sid, group) for at, group in attempts.items()}
    children = [s for group in built.values() for s in group]
    own = [e for e in events if not e.call]
    kind = _kind(events)
    attrs = step_attrs(own or events) | commit_attrs(own)
    if not own:
        attrs.pop("keel.idempotency_key", None)  # a sub-step's key is on its own spans
    numbers = [e.attempt for e in own if e.attempt > 0]
    if numbers:
        attrs["keel.attempt"] = max(numbers)
    if kind:
        attrs["keel.step.kind"] = kind
    name = f"keel.step {step}"
    if kind == "agent":
        agent = next((e.agent_id for e in events if e.agent_id), None) or step
        name = f"{gen_ai.GenAiOperationNameValues.INVOKE_AGENT.value} {agent}"
        attrs[gen_ai.GEN_AI_OPERATION_NAME] = gen_ai.GenAiOperationNameValues.INVOKE_AGENT.value
        attrs[gen_ai.GEN_AI_AGENT_NAME] = agent
    # Each sub-step's (or the plain step's) last attempt decides: one that failed and never committed
    # makes the step an error, unless the step itself committed.
    last: dict[str, SpanData] = {}
    for call, number in sorted(built):
        last[call] = built[(call, number)][0]
    failed = [s.status_description for s in last.values() if s.status == "error"]
    # A run-level end decided on this step (max_turns reached, a hard stop) names it too.
    failed += [failure_class(e) or e.event for e in own if e.attempt == 0 and e.event in STOPS]
    status, why = "unset", None
    if commit_attrs(own):
        status = "ok"
    elif failed:
        status, why = "error", failed[-1]
        attrs[error_attributes.ERROR_TYPE] = why or "error"
    span = SpanData(
        name=name,
        trace_id=trace,
        span_id=sid,
        parent_span_id=parent,
        start_ns=min([ns(first)] + [c.start_ns for c in children]),
        end_ns=max([ns(events[-1])] + [c.end_ns for c in children]),
        attributes=attrs,
        status=status,
        status_description=why,
        events=tuple(span_event(e) for e in events if e.attempt == 0),
    )
    return [span, *children]


def _run(trace: int, events: list[RunEvent], children: list[SpanData]) -> SpanData:
    first = events[0]
    ended = [e for e in events if e.event in ev.TERMINAL]
    end = ended[0] if ended else events[-1]
    attrs = common_attrs(first)
    status, why = "unset", None
    if ended:
        attrs["keel.run.status"] = ended[0].event
        if ended[0].event == ev.COMPLETED:
            status = "ok"
        elif ended[0].event == ev.FAILED:
            failed = [c.status_description for c in children if c.status == "error"]
            why = failure_class(ended[0]) or (failed[-1] if failed else None) or ev.FAILED
            status = "error"
            attrs[error_attributes.ERROR_TYPE] = why
    else:
        attrs["keel.run.open"] = True  # exported before its end (held past the idle timeout)
    start = min([ns(first)] + [c.start_ns for c in children])
    return SpanData(
        name=f"keel.run {first.workflow}",
        trace_id=trace,
        span_id=run_span_id(first.run_id),
        parent_span_id=None,
        start_ns=start,
        end_ns=max(ns(end), start),  # clocks of different services may disagree by a little
        attributes=attrs,
        status=status,
        status_description=why,
        events=tuple(span_event(e) for e in events if e.step is None or e.event in ev.TERMINAL),
    )


def unique(events: Iterable[RunEvent]) -> list[RunEvent]:
    """Events in log order, each event id once (a re-read copy adds nothing)."""
    seen: set[str] = set()
    out = []
    for e in events:
        if e.event_id not in seen:
            seen.add(e.event_id)
            out.append(e)
    return out


def spans_of(events: list[RunEvent]) -> list[SpanData]:
    """The spans of one run's events (log order); the run span first. Empty for no events."""
    events = unique(events)
    if not events:
        return []
    run_id = events[0].run_id
    events = [e for e in events if e.run_id == run_id]
    trace = trace_id_of(run_id, next((e.trace_id for e in events if e.trace_id), None))
    steps: dict[str, list[RunEvent]] = {}
    for e in events:
        if e.step is not None:
            steps.setdefault(e.step, []).append(e)
    root = run_span_id(run_id)
    children = [s for group in steps.values() for s in _step(trace, root, group)]
    return [_run(trace, events, children), *children]
