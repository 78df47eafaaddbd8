"""Agent steps in the scheduler's pure core: the durable loop of model turns and tool calls.

See docs/agents.md. The loop's state lives in the run's state (StepState.agent): a turn is issued as a
step command of kind `agent` (sub-step `turn-N`); the executor's `model_called` is the turn's commit
point. Each tool call the model asks for is checked here before anything is called (allowed tool, JSON
arguments, the tool's input schema); a refused call goes back to the model as its result, an accepted one
is a tool command on the tool step's path (sub-step `turn-N.call-I`, keyed by `agent_call_key`), whose
`step_committed` from the ledger is its commit point. When every call of a turn is committed, the next
turn is issued with the results; a message without tool calls is the final answer, which commits the step.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from keel import events as ev
from keel.contracts import CommitDetail, RunEvent, StepDetail
from keel.idempotency import agent_call_key, call_name, canonical_json, turn_name
from keel.tooldefs import Contract, ToolDefinition
from keel.vocab import BUDGET, VALIDATION
from keel.workflows import StepSpec, TemplateError, build_context, render_text
from services.scheduler import budgets
from services.scheduler.env import Env, ToolLookup
from services.scheduler.state import (
    COMMITTED,
    DISPATCHED,
    RUN_FAILED,
    AgentState,
    RunState,
    StepState,
)
from services.scheduler.units import agent_of, call_unit, turn_unit
from services.scheduler.verdicts import Decision, Emitted, end, event, fail, quarantine

TOOL_CALL_REFUSED, ANSWER_REFUSED = ev.TOOL_CALL_REFUSED, ev.ANSWER_REFUSED
EVIDENCE_CALLS = 8  # the latest calls a hard stop's evidence lists


@lru_cache(maxsize=256)
def _contract(schema_json: str) -> Contract:
    return Contract(json.loads(schema_json))


def _violations(schema: dict[str, Any], value: Any) -> list[str]:
    return _contract(canonical_json(schema)).violations(value)


def _offered(spec: StepSpec, tools: ToolLookup) -> list[dict[str, Any]]:
    """The step's tools as OpenAI `tools`: called by their bare names, with their input schemas."""
    offered = []
    for name, ref in spec.tool_names.items():
        definition = tools(ref)
        function = {
            "name": name,
            "description": definition.description,
            "parameters": definition.input_schema,
        }
        offered.append({"type": "function", "function": function})
    return offered


def start(state: RunState, spec: StepSpec, env: Env, now_ms: int) -> list[Emitted]:
    """The agent's first turn: the system and user messages rendered once, then kept in its state."""
    context = build_context(state.input, state.outputs())
    tools = env.tools
    try:
        if tools is None:
            raise LookupError("no tool definitions are available to the scheduler")
        _offered(spec, tools)  # every tool must be defined before the model is offered any
        messages: list[dict[str, Any]] = []
        if spec.system:
            messages.append({"role": "system", "content": render_text(spec.system, context)})
        messages.append({"role": "user", "content": render_text(spec.prompt or "", context)})
    except (TemplateError, ValueError, LookupError) as exc:
        return fail(state, now_ms, f"step {spec.name}: cannot start the agent: {exc}", spec.name).outputs
    step = state.steps[spec.name]
    step.status, step.attempt, step.first_issued_at = DISPATCHED, 1, now_ms
    step.fire_at = step.deadline = None  # the agent's sub-steps carry the timers
    step.agent = AgentState(messages=messages)
    return _next_turn(state, spec, env, now_ms)


def _next_turn(state: RunState, spec: StepSpec, env: Env, now_ms: int) -> list[Emitted]:
    agent = agent_of(state, spec.name)
    tools = _tools(env)
    if agent.turn >= spec.max_turns:
        return _turns_exhausted(state, spec, now_ms)
    agent.turn += 1
    agent.model, agent.calls, agent.meta = StepState(first_issued_at=now_ms), {}, {}
    request: dict[str, Any] = {
        "model": spec.model,
        "agent": spec.agent,
        "messages": agent.messages,
        "tools": _offered(spec, tools),
    }
    if spec.output_schema is not None:
        request["response_format"] = spec.output_schema
    if spec.max_tokens is not None:
        request["max_tokens"] = spec.max_tokens
    if spec.route_class is not None:
        request["route_class"] = spec.route_class
    agent.model.input_json = canonical_json(request)
    try:
        agent.model.worst_micros = budgets.turn_worst(
            spec, agent.model.input_json, env.routes, state.tenant_id
        )
    except LookupError as exc:  # an unpriced model: its spend could not be counted, so never called
        return fail(state, now_ms, f"step {spec.name}: {exc}", spec.name).outputs
    return budgets.begin(state, turn_unit(spec, agent.turn), 1, now_ms, env.budgets)


def _tools(env: Env) -> ToolLookup:
    if env.tools is None:
        raise LookupError("no tool definitions are available to the scheduler")
    return env.tools


def _turns_exhausted(state: RunState, spec: StepSpec, now_ms: int) -> list[Emitted]:
    """A turn past max_turns is never issued: the run is hard-stopped, with the evidence."""
    agent = agent_of(state, spec.name)
    evidence = {
        "limit": "max_turns",
        "max_turns": spec.max_turns,
        "turns": agent.turn,
        "last_calls": agent.chosen,
        "refusals": agent.violations[-EVIDENCE_CALLS:],
    }
    calls = ", ".join(f"{c['tool']}({c['arguments']})" for c in agent.chosen[-3:]) or "none"
    reason = (
        f"step {spec.name}: max_turns {spec.max_turns} reached without a final answer: hard stop "
        f"(latest calls: {calls})"
    )
    state.steps[spec.name].status = "failed"
    out_json, out_ref = ev.inline(evidence)
    detail = StepDetail(kind="agent", failure_class=BUDGET)
    return end(
        state, RUN_FAILED, now_ms, reason, step_detail=detail, output_json=out_json, output_ref=out_ref
    ).outputs


# -- a turn committed --------------------------------------------------------------------------------


def on_turn(state: RunState, spec: StepSpec, fact: RunEvent, env: Env, now_ms: int) -> Decision:
    """`model_called` of a turn: its commit point. A repeat, or one of an older turn, changes nothing."""
    agent = agent_of(state, spec.name)
    if fact.call != turn_name(agent.turn) or agent.model.status == COMMITTED:
        return Decision(state, [])
    agent.model.status, agent.model.deadline, agent.model.fire_at = COMMITTED, None, None
    _tools(env)
    message = _message(fact)
    agent.messages.append(message)
    calls = message.get("tool_calls") or []
    if not calls:
        return _answer(state, spec, message, env, now_ms)
    return _calls(state, spec, calls, env, now_ms)


def _message(fact: RunEvent) -> dict[str, Any]:
    """The assistant message as the conversation keeps it (role, text, tool calls)."""
    try:
        raw = json.loads(fact.output_json or "null")
    except ValueError:
        raw = None
    if not isinstance(raw, dict):
        return {"role": "assistant", "content": None}
    message: dict[str, Any] = {"role": "assistant", "content": raw.get("content")}
    calls = raw.get("tool_calls")
    if isinstance(calls, list) and calls:
        message["tool_calls"] = calls
    return message


def _check(call: Any, spec: StepSpec, tools: ToolLookup) -> tuple[str, dict[str, Any], ToolDefinition] | str:
    """(tool, arguments, definition) of a call the model may make, or why it may not."""
    function = call.get("function") if isinstance(call, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    allowed = spec.tool_names
    if name not in allowed:
        return f"{name!r} is not one of this agent's tools ({', '.join(allowed)}): not called"
    raw = function.get("arguments") if isinstance(function, dict) else None
    try:
        args = json.loads(raw) if isinstance(raw, str) and raw.strip() else (raw or {})
    except ValueError as exc:
        return f"the arguments of {name} are not valid JSON ({exc}): not called"
    if not isinstance(args, dict):
        return f"the arguments of {name} must be a JSON object, not {type(args).__name__}: not called"
    tool = allowed[name]
    definition = tools(tool)
    problems = _violations(definition.input_schema, args)
    if problems:
        return f"the arguments of {name} break its input schema: {'; '.join(problems)}: not called"
    return tool, args, definition


def _calls(state: RunState, spec: StepSpec, calls: list[Any], env: Env, now_ms: int) -> Decision:
    agent = agent_of(state, spec.name)
    tools = _tools(env)
    outputs: list[Emitted] = []
    accepted: list[tuple[str, str, bool]] = []  # (sub-step, tool, writes) to issue
    by_key: dict[str, str] = {}
    for index, call in enumerate(calls):
        name = call_name(agent.turn, index)
        call_id = str(call.get("id") or name) if isinstance(call, dict) else name
        checked = _check(call, spec, tools)
        if isinstance(checked, str):
            agent.meta[name] = {"id": call_id, "refused": checked}
            agent.violations.append(f"{name}: {checked}")
            outputs.append(_refused(state, spec, TOOL_CALL_REFUSED, name, checked, call, now_ms))
            continue
        tool, args, definition = checked
        key = agent_call_key(
            state.tenant_id,
            state.workflow,
            state.run_id,
            spec.name,
            tool,
            args,
            side_effects=definition.side_effects,
            turn=agent.turn,
            index=index,
        )
        meta: dict[str, Any] = {
            "id": call_id,
            "tool": tool,
            "key": key,
            "arguments": args,
            "writes": definition.side_effects,
        }
        agent.meta[name] = meta
        if key in by_key:  # the same write twice in one turn: one effect, one call; both get its result
            meta["same_as"] = by_key[key]
            continue
        by_key[key] = name
        agent.calls[name] = StepState(
            input_json=canonical_json({"tool": tool, "payload": args}),
            idempotency_key=key,
            first_issued_at=now_ms,
            worst_micros=budgets.fee_worst(definition.fee_usd),
        )
        accepted.append((name, tool, definition.side_effects))
        looped = _repeated(state, spec, name, tool, args, key, now_ms)
        if looped is not None:
            return Decision(state, outputs + looped)
    if len(agent.violations) > spec.max_violations:
        return Decision(state, outputs + _too_many_violations(state, spec, now_ms))
    for name, tool, writes in accepted:
        outputs += budgets.begin(state, call_unit(spec, name, tool, writes), 1, now_ms, env.budgets)
    if not accepted:  # every call refused: the model hears why at once
        outputs += _close_turn(state, spec, env, now_ms)
    return Decision(state, outputs)


def _repeated(
    state: RunState, spec: StepSpec, call: str, tool: str, args: dict[str, Any], key: str, now_ms: int
) -> list[Emitted] | None:
    """Loop detection: the same tool with the same canonical arguments `max_repeats` times in the run is a
    hard stop (`loop_detected`, then the run fails with failure class budget), before the call is made."""
    agent = agent_of(state, spec.name)
    signature = f"{tool}|{canonical_json(args)}"
    agent.repeats[signature] = agent.repeats.get(signature, 0) + 1
    if not spec.max_repeats or agent.repeats[signature] < spec.max_repeats:
        return None
    evidence = {
        "limit": "max_repeats",
        "max_repeats": spec.max_repeats,
        "tool": tool,
        "arguments": args,
        "calls": [c for c in agent.chosen if c["tool"] == tool and c["arguments"] == args]
        + [{"call": call, "tool": tool, "arguments": args, "key": key}],
    }
    reason = (
        f"step {spec.name}: loop detected: {tool} called {agent.repeats[signature]} times with the same "
        f"arguments (max_repeats {spec.max_repeats}): hard stop"
    )
    out_json, out_ref = ev.inline(evidence)
    detected = event(
        state,
        ev.LOOP_DETECTED,
        now_ms,
        spec.name,
        1,
        call=call,
        agent_id=spec.agent,
        idempotency_key=key,
        error=reason,
        output_json=out_json,
        output_ref=out_ref,
        step_detail=StepDetail(kind="agent", failure_class=BUDGET),
    )
    state.steps[spec.name].status = "failed"
    detail = StepDetail(kind="agent", failure_class=BUDGET)
    ended = end(
        state, RUN_FAILED, now_ms, reason, step_detail=detail, output_json=out_json, output_ref=out_ref
    )
    return [detected, *ended.outputs]


def _refused(
    state: RunState, spec: StepSpec, kind: str, call: str, reason: str, raw: Any, now_ms: int
) -> RunEvent:
    input_json, input_ref = ev.inline(raw) if raw is not None else (None, None)
    return event(
        state,
        kind,
        now_ms,
        spec.name,
        1,
        call=call,
        agent_id=spec.agent,
        error=reason,
        input_json=input_json,
        input_ref=input_ref,
        step_detail=StepDetail(kind="agent", failure_class=VALIDATION),
    )


def _too_many_violations(state: RunState, spec: StepSpec, now_ms: int) -> list[Emitted]:
    agent = agent_of(state, spec.name)
    reason = (
        f"the model of agent step {spec.name} broke its contract {len(agent.violations)} times "
        f"(max_violations {spec.max_violations}); latest: {agent.violations[-1]}"
    )
    details = {"violations": agent.violations, "turn": agent.turn}
    return quarantine(
        state, spec.name, now_ms, reason, VALIDATION, error=agent.violations[-1], details=details
    ).outputs


# -- a tool call committed ---------------------------------------------------------------------------


def record_call(state: RunState, spec: StepSpec, fact: RunEvent) -> bool:
    """Keep the committed result of one of the turn's calls (whatever the run is doing: an effect that
    exists is recorded). False when it changes nothing (a repeat, or a call of no current turn)."""
    agent = state.steps[spec.name].agent
    call = agent.calls.get(fact.call or "") if agent is not None else None
    if call is None or call.status == COMMITTED:
        return False
    call.status, call.fire_at, call.deadline = COMMITTED, None, None
    call.output = json.loads(fact.output_json) if fact.output_json else None
    call.external_id = fact.commit.external_id if fact.commit else None
    return True


def turn_done(state: RunState, spec: StepSpec) -> bool:
    agent = agent_of(state, spec.name)
    return agent.model.status == COMMITTED and all(c.status == COMMITTED for c in agent.calls.values())


def after_call(state: RunState, spec: StepSpec, env: Env, now_ms: int) -> list[Emitted]:
    """The next turn, once every call of this one is committed."""
    if not turn_done(state, spec):
        return []
    return _close_turn(state, spec, env, now_ms)


def _close_turn(state: RunState, spec: StepSpec, env: Env, now_ms: int) -> list[Emitted]:
    """Every call's result goes back to the model, in the order it asked, then the next turn."""
    agent = agent_of(state, spec.name)
    for name, meta in agent.meta.items():
        if "refused" in meta:
            content = canonical_json({"error": meta["refused"]})
        else:
            result = agent.calls[meta.get("same_as", name)]
            content = canonical_json(result.output)
            agent.chosen.append(
                {"call": name, "tool": meta["tool"], "arguments": meta["arguments"], "key": meta["key"]}
            )
        agent.messages.append({"role": "tool", "tool_call_id": meta["id"], "content": content})
    agent.chosen = agent.chosen[-EVIDENCE_CALLS:]
    return _next_turn(state, spec, env, now_ms)


# -- the final answer --------------------------------------------------------------------------------


def _answer(state: RunState, spec: StepSpec, message: dict[str, Any], env: Env, now_ms: int) -> Decision:
    agent = agent_of(state, spec.name)
    content = message.get("content")
    output: Any = {"text": content if isinstance(content, str) else ""}
    if spec.output_schema is not None:
        try:
            output = json.loads(content) if isinstance(content, str) else None
            problems = _violations(spec.output_schema, output)
        except ValueError as exc:
            problems = [f"the answer is not valid JSON ({exc})"]
        if problems:
            reason = f"the final answer breaks the step's output schema: {'; '.join(problems)}"
            name = turn_name(agent.turn)
            agent.violations.append(f"{name}: {reason}")
            refused = _refused(state, spec, ANSWER_REFUSED, name, reason, None, now_ms)
            if len(agent.violations) > spec.max_violations:
                return Decision(state, [refused, *_too_many_violations(state, spec, now_ms)])
            retry = f"{reason}. Answer again with only a JSON object that meets the schema."
            agent.messages.append({"role": "user", "content": retry})
            return Decision(state, [refused, *_next_turn(state, spec, env, now_ms)])
    step = state.steps[spec.name]
    step.status, step.output = COMMITTED, output
    out_json, out_ref = ev.inline(output)
    committed = event(
        state,
        ev.STEP_COMMITTED,
        now_ms,
        spec.name,
        step.attempt,
        agent_id=spec.agent,
        output_json=out_json,
        output_ref=out_ref,
        commit=CommitDetail(committed_at=ev.at_ms(now_ms)),
    )
    return Decision(state, [committed])
