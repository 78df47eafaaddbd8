"""One step attempt re-executed in a sandbox from its recording: today's parsing code over the recorded
answer, and the difference from what was recorded then.

A tool step's recorded provider answer goes through the adapters' reading of it (keel.tooldefs.output,
with the tool definition given: the one loaded now, or the recorded one); an llm step's or agent turn's
recorded model answer goes through the executor's completion reading (keel.completion) and the step's
output schema. Both are the services' own code, kept in the runtime library so that `keel replay` and
the API's `POST /v1/runs/{run_id}/replay` run exactly what the services run. Nothing here
is handed an HTTP client or a model router: a sandbox that wanted to call out has nothing to call with,
and an attempt whose answer was not recorded is an error (NotRecorded), never a live call."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from keel import events as ev
from keel.completion import Drift, message_of, parse_json_object
from keel.contracts import RunEvent
from keel.recording import Recording, RecordingError
from keel.tooldefs import Contract, ToolDefinition
from keel.tooldefs.output import check_output as read_output
from keel.toolrun.result import ContractViolation


class NotRecorded(RecordingError):
    """The recording holds no answer for this attempt: a replay never asks the provider or model."""


@dataclass
class Outcome:
    """One parse: its output, or why it failed (the contract's or the completion's violations)."""

    ok: bool
    output: Any = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "output": self.output, "error": self.error}


@dataclass
class StepReplay:
    step: str
    attempt: int
    call: str | None
    kind: str  # tool, llm, turn
    input: Any
    answer: Any  # the recorded provider or model answer the parse ran over
    recorded: Outcome
    now: Outcome
    diff: list[str] = field(default_factory=list)
    parsed_with: str = "recorded"  # which definition parsed the answer: recorded, or today's (its source)

    @property
    def same(self) -> bool:
        return not self.diff


def _facts(rec: Recording, step: str, attempt: int | None, call: str | None) -> tuple[int, list[RunEvent]]:
    mine = [e for e in rec.events if e.step == step and e.call == call and e.attempt]
    if not mine:
        where = f"{step}" + (f" {call}" if call else "")
        raise NotRecorded(f"the recording has no attempt of step {where}")
    chosen = attempt if attempt is not None else max(e.attempt for e in mine)
    facts = [e for e in mine if e.attempt == chosen]
    if not facts:
        known = sorted({e.attempt for e in mine})
        raise NotRecorded(f"the recording has no attempt {chosen} of step {step} (recorded: {known})")
    return chosen, facts


def check_output(definition: ToolDefinition, raw: Any) -> Outcome:
    """The adapters' own reading of a provider's answer (keel.tooldefs.output.check_output)."""
    try:
        return Outcome(True, read_output(definition, raw))
    except ContractViolation as exc:
        return Outcome(False, error=str(exc))


_DRIFT = "breaks the output contract of "


def _recorded_tool(rec: Recording, result: RunEvent) -> tuple[Any, Outcome]:
    """(the provider's answer, the recorded outcome) of a tool attempt."""
    if result.event == ev.TOOL_SUCCEEDED:
        output = rec.output_of(result)
        return output, Outcome(True, output)
    if result.tool is not None and result.tool.effect_accepted and (result.output_json or result.output_ref):
        error = result.error or ""
        _, sep, rest = error.partition(_DRIFT)
        violation = rest.partition(": ")[2] if sep else error
        return rec.output_of(result), Outcome(False, error=violation)
    raise NotRecorded(
        f"attempt {result.attempt} of {result.step} has no recorded provider answer "
        f"({result.event}: {result.error}): nothing to parse, and a replay never calls the provider"
    )


def replay_tool(
    rec: Recording,
    step: str,
    definition: ToolDefinition | None = None,
    attempt: int | None = None,
    call: str | None = None,
    parsed_with: str = "today's definition",
) -> StepReplay:
    """A tool attempt: `definition` (default: the recorded one) parses the recorded answer."""
    chosen, facts = _facts(rec, step, attempt, call)
    called = next((e for e in facts if e.event == ev.TOOL_CALLED), None)
    result = next((e for e in facts if e.event in (ev.TOOL_SUCCEEDED, ev.TOOL_FAILED)), None)
    if called is None or result is None:
        raise NotRecorded(f"attempt {chosen} of {step} has no recorded tool call and result")
    tool = called.tool.tool if called.tool else ""
    if definition is None:
        if tool not in rec.tools:
            raise RecordingError(f"the recording holds no definition of {tool}")
        definition, parsed_with = rec.tools[tool], "the recorded definition"
    answer, recorded = _recorded_tool(rec, result)
    now = check_output(definition, answer)
    replay = StepReplay(step, chosen, call, "tool", rec.input_of(called), answer, recorded, now)
    replay.diff, replay.parsed_with = diff(recorded, now), f"{parsed_with} of {definition.tool}"
    return replay


def _model_answer(rec: Recording, facts: list[RunEvent], step: str, chosen: int) -> tuple[RunEvent, Any]:
    calls = [e for e in facts if e.event == ev.MODEL_CALLED]
    if not calls:
        failed = next((e for e in facts if e.event == ev.STEP_FAILED), None)
        why = f" ({failed.error})" if failed else ""
        raise NotRecorded(
            f"attempt {chosen} of {step} has no recorded model answer{why}: a replay never calls the model"
        )
    last = calls[-1]  # an llm step asked again (re-ask) answers in its second call
    return last, rec.output_of(last)


def replay_model(
    rec: Recording,
    step: str,
    attempt: int | None = None,
    call: str | None = None,
    output_schema: dict[str, Any] | None = None,
) -> StepReplay:
    """An llm step (call None) or an agent turn (`call` = turn-N): the executor's reading of the recorded
    answer, and the step's output schema (default: the one the attempt was started with)."""
    chosen, facts = _facts(rec, step, attempt, call)
    started = next((e for e in facts if e.event == ev.STEP_STARTED), None)
    request = rec.input_of(started) if started is not None else {}
    called, answer = _model_answer(rec, facts, step, chosen)
    committed = next((e for e in facts if e.event == ev.STEP_COMMITTED), None)
    failed = next((e for e in facts if e.event == ev.STEP_FAILED), None)
    turn = call is not None
    if turn:
        recorded = Outcome(True, answer) if failed is None else Outcome(False, error=failed.error)
        message = answer
    else:
        if committed is not None:
            recorded = Outcome(True, rec.output_of(committed))
        else:
            recorded = Outcome(False, error=failed.error if failed else "not committed")
        text = answer.get("text") if isinstance(answer, dict) and set(answer) == {"text"} else None
        message = {"role": "assistant", "content": text if text is not None else json.dumps(answer)}
    schema = output_schema if output_schema is not None else _schema_of(request, turn)
    now = _read_completion(message, bool(request.get("tools")) if turn else False, schema, turn)
    replay = StepReplay(step, chosen, call, "turn" if turn else "llm", request, answer, recorded, now)
    replay.diff = diff(recorded, now)
    return replay


def _schema_of(request: Any, turn: bool) -> dict[str, Any] | None:
    if not isinstance(request, dict):
        return None
    value = request.get("response_format" if turn else "output_schema")
    return value if isinstance(value, dict) else None


def _read_completion(message: Any, tools_offered: bool, schema: dict[str, Any] | None, turn: bool) -> Outcome:
    doc = {"choices": [{"message": message}]}
    try:
        read = message_of(doc, tools_offered)
        if turn:
            return Outcome(True, read)
        output = parse_json_object(read["content"]) if schema is not None else {"text": read["content"]}
    except Drift as exc:
        return Outcome(False, error=str(exc))
    if schema is not None:
        broken = Contract(schema).violations(output)
        if broken:
            return Outcome(
                False, output, "the answer does not match the step's output schema: " + "; ".join(broken)
            )
    return Outcome(True, output)


def diff(recorded: Outcome, now: Outcome) -> list[str]:
    """What changed between the recorded outcome and today's: empty when they agree."""
    lines = []
    if recorded.ok != now.ok:
        was = "succeeded" if recorded.ok else f"failed: {recorded.error}"
        is_ = "succeeds" if now.ok else f"fails: {now.error}"
        lines.append(f"recorded: {was}\ntoday:    {is_}")
    elif not recorded.ok and recorded.error != now.error and (now.error or "") not in (recorded.error or ""):
        lines.append(f"recorded failure: {recorded.error}\ntoday's failure:  {now.error}")
    if recorded.ok and now.ok and recorded.output != now.output:
        lines.append(
            f"recorded output: {json.dumps(recorded.output)}\ntoday's output:  {json.dumps(now.output)}"
        )
    return lines


def attempts_of(rec: Recording, step: str, call: str | None = None) -> list[dict[str, Any]]:
    """The step's attempts as recorded: how each ended, and why the next one was chosen."""
    found: dict[int, dict[str, Any]] = {}
    for e in rec.events:
        if e.step != step or (call is not None and e.call != call) or not e.attempt:
            continue
        a = found.setdefault(e.attempt, {"attempt": e.attempt, "facts": []})
        a["facts"].append(e.event)
        if e.event in (ev.TOOL_FAILED, ev.STEP_FAILED):
            a["failure_class"] = (e.tool.failure_class if e.tool else None) or (
                e.step_detail.failure_class if e.step_detail else None
            )
            a["error"] = e.error
        if e.event == ev.RETRY_SCHEDULED and e.retry is not None:
            a["retry_reason"] = e.retry.reason
        if e.event == ev.QUARANTINED and e.quarantine is not None:
            a["quarantine_reason"] = e.quarantine.reason
        if e.event in (ev.TOOL_SUCCEEDED, ev.STEP_COMMITTED):
            a["ended"] = e.event
    return [found[k] for k in sorted(found)]
