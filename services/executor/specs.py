"""What a step command asks the model for: the request of an llm step or of an agent's model turn, read
from the command's input and checked before anything is called (a malformed command raises ValueError
and is dead-lettered, never called)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from keel.contracts import StepCommand
from keel.tooldefs.contract import Contract, schema_problems
from keel.toolrun.result import Effect


@dataclass(frozen=True, slots=True)
class LlmSpec:
    """What an llm step command asks the model router for."""

    agent: str | None
    model: str
    prompt: str
    response_format: str
    # The JSON Schema the answer must meet: the answer is asked for as JSON, and a wrong one is asked
    # again once with the violations (see reask_messages).
    output_schema: dict[str, Any] | None = None
    max_tokens: int | None = None
    route_class: str | None = None  # the step's kind of work; the deployment maps it to models


def llm_spec(cmd: StepCommand) -> LlmSpec:
    """The llm step's request; raises ValueError when the command is malformed."""
    try:
        spec = json.loads(cmd.input_json)
        model, prompt = spec["model"], spec["prompt"]
        if not isinstance(model, str) or not isinstance(prompt, str):
            raise ValueError("model and prompt must be strings")
        schema = _schema(spec.get("output_schema"))
        response_format = "json" if schema is not None else spec.get("response_format") or "text"
        if response_format not in ("json", "text"):
            raise ValueError(f"response_format must be json or text, not {response_format!r}")
        max_tokens = _max_tokens(spec.get("max_tokens"))
        route_class = _route_class(spec.get("route_class"))
        return LlmSpec(spec.get("agent"), model, prompt, response_format, schema, max_tokens, route_class)
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"malformed llm step command: {type(exc).__name__}: {exc}") from None


def _schema(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    problems = schema_problems(value)
    if problems:
        raise ValueError(f"output_schema is not a JSON Schema: {problems[0][1]}")
    return dict(value)


def _route_class(value: Any) -> str | None:
    if value is not None and (not isinstance(value, str) or not value):
        raise ValueError(f"route_class must be a non-empty string, not {value!r}")
    return value


def _max_tokens(value: Any) -> int | None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
        raise ValueError(f"max_tokens must be a positive integer, not {value!r}")
    return value


def effect_tags(cmd: StepCommand) -> dict[str, str]:
    """What the model is told the call is for (keel_tenant, keel_run, keel_step, keel_call): the same
    tags a tool call's provider gets, so a provider's own logs say which step asked."""
    return Effect(cmd.tenant_id, cmd.run_id, cmd.step, cmd.call).metadata()


def schema_violations(schema: dict[str, Any], answer: Any) -> list[str]:
    """`$.path: message` for each way the answer breaks the step's output schema; empty when it meets it."""
    return Contract(schema).violations(answer)


def reask_messages(prompt: str, bad_answer: str | None, violations: list[str]) -> list[dict[str, Any]]:
    """The conversation that asks an llm step's model once more: its answer and why it was wrong."""
    why = "; ".join(violations)
    return [
        {"role": "user", "content": prompt},
        {"role": "assistant", "content": bad_answer or ""},
        {
            "role": "user",
            "content": f"Your answer does not match the required JSON Schema: {why}. "
            "Answer again with only the corrected JSON object.",
        },
    ]


@dataclass(frozen=True, slots=True)
class TurnSpec:
    """One model turn of an agent step, as the scheduler rendered it once for all the turn's attempts:
    the conversation so far, the tools as OpenAI `tools`, and the final answer's JSON Schema if any."""

    agent: str | None
    model: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    response_format: dict[str, Any] | None
    max_tokens: int | None
    route_class: str | None = None


def turn_spec(cmd: StepCommand) -> TurnSpec:
    """The agent turn's request; raises ValueError when the command is malformed."""
    try:
        if not cmd.call:  # its facts could not be told from the other turns' (nor placed by the scheduler)
            raise ValueError("an agent turn's command must name its turn in `call`")
        spec = json.loads(cmd.input_json)
        model, messages, tools = spec["model"], spec["messages"], spec.get("tools") or []
        if not isinstance(model, str) or not model:
            raise ValueError("model must be a non-empty string")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise ValueError("messages must be a non-empty list of objects")
        if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
            raise ValueError("tools must be a list of objects")
        agent = cmd.agent_id or spec.get("agent")
        schema = _schema(spec.get("response_format"))
        max_tokens, route_class = _max_tokens(spec.get("max_tokens")), _route_class(spec.get("route_class"))
        return TurnSpec(agent, model, messages, tools, schema, max_tokens, route_class)
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"malformed agent turn command: {type(exc).__name__}: {exc}") from None
