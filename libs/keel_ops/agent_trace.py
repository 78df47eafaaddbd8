"""The timeline of an agent step, read from its facts alone: per turn, what the model was asked (by ref),
its tokens and cost, the tools it chose with their arguments and keys, what came back, what was refused.

Pure: takes the events as GET /v1/runs/{id}/events returns them (with `call` and the whole `body`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from keel.events import MODEL_CALLED, TOOL_CALL_REFUSED, TOOL_SUCCEEDED

_CALL = re.compile(r"turn-([0-9]+)(\.call-[0-9]+)?")
WIDTH = 60  # of a value shown inline (arguments, answers, results)


def turn_of(call: str | None) -> int | None:
    m = _CALL.fullmatch(call or "")
    return int(m.group(1)) if m else None


def short(value: Any, width: int = WIDTH) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _loads(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def call_text(call: Any) -> str:
    """`name({"arg":...})` of an OpenAI tool call; whatever it is, shortened, when it is not one."""
    fn = call.get("function") if isinstance(call, dict) else None
    if not isinstance(fn, dict):
        return short(call)
    return f"{fn.get('name')}({short(_loads(fn.get('arguments')), WIDTH - 10)})"


def choice(body: dict[str, Any]) -> str:
    """What the model chose in a turn: the tool calls it asked for, or its answer."""
    message = _loads(body.get("output_json"))
    if not isinstance(message, dict):
        ref = body.get("output_ref")
        return f"-> (message at {ref})" if ref else ""
    calls = message.get("tool_calls") or []
    if calls:
        return "-> " + ", ".join(call_text(c) for c in calls)
    return f"-> answer: {short(_loads(message.get('content') or ''))}"


@dataclass
class AgentStep:
    """Totals of one agent step, for the line that sums it up."""

    agent: str | None = None
    turns: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0
    calls: set[str] = field(default_factory=set)
    refused: set[str] = field(default_factory=set)

    def add(self, e: dict[str, Any]) -> None:
        body = e.get("body") or {}
        self.agent = self.agent or body.get("agent_id")
        self.turns = max(self.turns, turn_of(e.get("call")) or 0)
        self.cost += float(e.get("cost_usd") or 0)
        if e["event"] == MODEL_CALLED:
            usage = body.get("model_call") or {}
            self.tokens_in += usage.get("prompt_tokens") or 0
            self.tokens_out += usage.get("completion_tokens") or 0
        if ".call-" in (e.get("call") or ""):
            (self.refused if e["event"] == TOOL_CALL_REFUSED else self.calls).add(e["call"])

    def summary(self, step: str) -> str:
        agent = f" (agent {self.agent})" if self.agent else ""
        return (
            f"  {step}{agent}: {self.turns} turns, {self.tokens_in} in / {self.tokens_out} out tokens, "
            f"${self.cost:.6f}; {len(self.calls)} tool calls, {len(self.refused)} refused"
        )


def detail(e: dict[str, Any], asks: dict[str, str]) -> list[str]:
    """The parts of an agent sub-step's line that only agent facts have (before the common ones)."""
    body, kind = e.get("body") or {}, e["event"]
    if kind == MODEL_CALLED:
        usage = body.get("model_call") or {}
        parts = [f"{usage.get('prompt_tokens', 0)} in / {usage.get('completion_tokens', 0)} out tokens"]
        if e.get("cost_usd"):
            parts.append(f"${e['cost_usd']:.6f}")
        if body.get("input_ref"):
            parts.append("asked " + asks.setdefault(body["input_ref"], f"ask#{len(asks) + 1}"))
        parts.append(choice(body))
        return [p for p in parts if p]
    if kind == TOOL_CALL_REFUSED:
        return [
            f"refused: {short(e.get('error') or '', 100)}",
            f"asked {call_text(_loads(body.get('input_json')))}",
        ]
    tool = (body.get("tool") or {}).get("tool")
    return [tool] if tool else []


def result(e: dict[str, Any]) -> str:
    """What came back to the model from a tool call (after the common parts)."""
    body = e.get("body") or {}
    if e["event"] == TOOL_SUCCEEDED and body.get("output_json"):
        return f"<- {short(_loads(body['output_json']))}"
    return ""


def answer(e: dict[str, Any]) -> str:
    """The agent step's own commit: its final answer."""
    body = e.get("body") or {}
    return f"answer: {short(_loads(body.get('output_json')))}" if body.get("output_json") else ""
