"""What an operator supplies with a decision (docs/quarantine.md): an edited input, checked against its
tool's input schema and keyed anew; an output, checked against the schema the held unit's output meets."""

from __future__ import annotations

from typing import Any

from keel.idempotency import agent_call_key, canonical_json
from keel.tooldefs import Contract
from keel.workflows import StepSpec
from services.scheduler.env import Env
from services.scheduler.state import RunState
from services.scheduler.units import Unit, agent_of


def tool_schema(env: Env, tool: str | None, side: str) -> dict[str, Any] | str:
    """A tool's `input_schema` or `output_schema`, or why it cannot be had (nothing is checked blindly)."""
    if env.tools is None or tool is None:
        return f"no tool definitions are available to check against {tool}'s {side}"
    try:
        schema: dict[str, Any] = getattr(env.tools(tool), side)
    except LookupError as exc:
        return f"cannot check against {tool}'s {side}: {exc}"
    return schema


def input_problems(env: Env, unit: Unit, payload: Any) -> list[str] | str:
    """`$.path: message` for each way an edited input breaks the unit's tool's input schema."""
    schema = tool_schema(env, unit.tool, "input_schema")
    return schema if isinstance(schema, str) else Contract(schema).violations(payload)


def output_problems(env: Env, unit: Unit | None, step: StepSpec, output: Any) -> list[str] | str:
    """How a supplied output breaks what the held unit's output must meet: its tool's output schema (a
    tool step, an agent's tool call), or the llm or agent step's own `output_schema` (none: anything)."""
    if unit is not None and unit.kind == "tool":
        schema: dict[str, Any] | str | None = tool_schema(env, unit.tool, "output_schema")
    else:
        schema = step.output_schema
    if isinstance(schema, str):
        return schema
    return [] if schema is None else Contract(schema).violations(output)


def whose(unit: Unit | None, step: StepSpec) -> str:
    return f"{unit.tool}'s" if unit is not None and unit.kind == "tool" else f"step {step.name}'s"


def answers_another(state: RunState, unit: Unit) -> bool:
    """Whether the call's result also answers the same write asked again in its turn (`same_as`)."""
    return unit.call is not None and any(
        meta.get("same_as") == unit.call for meta in agent_of(state, unit.step).meta.values()
    )


def edit_call(state: RunState, unit: Unit, payload: dict[str, Any]) -> str:
    """An agent's tool call gets new arguments: its key is the agent call key of them, and the
    conversation's request for this call now says what was called, so the model reads the result as the
    answer to the call that was made (the model's own request stays on the log, in its turn's fact)."""
    loop = agent_of(state, unit.step)
    name = unit.call or ""
    turn, index = (int(part.split("-")[1]) for part in name.split("."))  # turn-T.call-I
    key = agent_call_key(
        state.tenant_id,
        state.workflow,
        state.run_id,
        unit.step,
        unit.tool or "",
        payload,
        side_effects=unit.writes,
        turn=turn,
        index=index,
    )
    loop.meta[name] = {**loop.meta[name], "arguments": payload, "key": key}  # new dicts: copies share them
    messages = loop.messages if isinstance(loop.messages, list) else []
    for i in range(len(messages) - 1, -1, -1):  # the turn's request: the latest message with tool calls
        calls = messages[i].get("tool_calls") if isinstance(messages[i], dict) else None
        if isinstance(calls, list) and index < len(calls) and isinstance(calls[index], dict):
            calls = list(calls)
            function = {**(calls[index].get("function") or {}), "arguments": canonical_json(payload)}
            calls[index] = {**calls[index], "function": function}
            messages[i] = {**messages[i], "tool_calls": calls}
            break
    return key
