"""The simulated model's agent: a deterministic planner that works for any set of offered tools (pure).

It calls each offered tool once, in the order offered, filling the arguments from what the conversation
taught it (infra/simulators/facts.py), one call per turn (every call it can fill at once when the user
or system message says "in parallel"), then gives its final answer: an object meeting the request's
`json_schema` response format, a subject/body object for `json_object`, else text. A user message saying
"call tool X" limits the plan to the tools it names. Model faults make it misbehave the way real models
do, one request at a time: loop on one call, call a tool it was not offered, send arguments that break
the schema or are not JSON, answer against the schema.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from infra.simulators.facts import Facts, Json, broken, facts_of, fill, nulled, text_of, valid

LOOP, UNKNOWN_TOOL, BAD_ARGS, MALFORMED_ARGS, BAD_ANSWER = (
    "loop",
    "unknown_tool",
    "bad_args",
    "malformed_args",
    "bad_answer",
)
_CALL_TOOL = re.compile(r"call tool ([A-Za-z0-9_.\-]+)")
_PARALLEL = "in parallel"
# fmt: off
_WORDS = (
    "thanks", "for", "your", "note", "we", "can", "help", "the", "team", "with", "a", "quick", "plan", "next",
    "week", "to", "review", "pricing", "and", "share", "results", "from", "our", "pilot", "happy", "call",
    "on", "tuesday", "about", "goals", "budget", "timeline",
)
# fmt: on


def draft(model: str, prompt: str) -> tuple[str, str]:
    """A subject and body that depend only on the model and the prompt, so replays compare equal."""
    digest = hashlib.sha256(f"{model}\n{prompt}".encode()).digest()
    words = [_WORDS[b % len(_WORDS)] for b in digest[1 : 13 + digest[0] % 12]]
    subject = " ".join(words[:4]).capitalize()
    return subject, " ".join(words).capitalize() + "."


@dataclass(frozen=True)
class Reply:
    message: Json  # the assistant message
    finish_reason: str  # "tool_calls" or "stop"
    produced: str  # the text its completion tokens are counted from


@dataclass(frozen=True)
class Tool:
    name: str
    parameters: Json


def offered(tools: list[Json] | None) -> list[Tool]:
    found = []
    for tool in tools or []:
        fn = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            params = fn.get("parameters")
            found.append(Tool(fn["name"], params if isinstance(params, dict) else {}))
    return found


def last_user_text(messages: list[Json]) -> str:
    return next((text_of(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")


def failed(message: Json) -> bool:
    """A tool result saying the call failed or was refused (a JSON object with an `error`): the model
    tries that tool again."""
    try:
        content = json.loads(text_of(message.get("content")))
    except ValueError:
        return False
    return isinstance(content, dict) and content.get("error") is not None


def called(messages: list[Json]) -> set[str]:
    """Names of the tools already called: asked for by the model, and answered by a tool message that is
    not an error. A tool message whose id names no call answers the unanswered calls of the turn before
    it, in order."""
    results = [m for m in messages if m.get("role") == "tool"]
    answered = {m.get("tool_call_id") for m in results if not failed(m)}
    errors = {m.get("tool_call_id") for m in results if failed(m)}
    calls_of = [
        (i, m.get("tool_calls") or []) for i, m in enumerate(messages) if m.get("role") == "assistant"
    ]
    known = {c.get("id") for _, calls in calls_of for c in calls if isinstance(c, dict)}
    names: set[str] = set()
    for i, calls in calls_of:
        following = []
        for later in messages[i + 1 :]:
            if later.get("role") != "tool":
                break
            following.append(later)
        orphans = [t for t in following if t.get("tool_call_id") not in known]
        unanswered = []
        for call in calls:
            name = str((call.get("function") or {}).get("name"))
            if call.get("id") in answered:
                names.add(name)
            elif call.get("id") not in errors:
                unanswered.append(name)
        names.update(name for name, orphan in zip(unanswered, orphans, strict=False) if not failed(orphan))
    return names


class Planner:
    """One request's worth of reasoning: the plan, the facts, and the reply (with at most one fault)."""

    def __init__(self, model: str, messages: list[Json], tools: list[Json] | None, fmt: Json | None) -> None:
        self.model, self.messages, self.fmt = model, messages, fmt or {}
        self.prompt = last_user_text(messages)
        tools_ = offered(tools)
        named = [m.group(1) for m in _CALL_TOOL.finditer(self.prompt)]
        # "call tool X": the user chose the tools; a model only ever calls tools it was offered.
        self.plan = [t for t in tools_ if t.name in named] if named else tools_
        self.offered = tools_
        done = called(messages)
        self.remaining = [t for t in self.plan if t.name not in done]
        self.facts: Facts = facts_of(messages)
        instructions = [self.prompt] + [
            text_of(m.get("content")) for m in messages if m.get("role") == "system"
        ]
        self.parallel = any(_PARALLEL in text.lower() for text in instructions)

    def draft(self) -> tuple[str, str]:
        return draft(self.model, self.prompt)

    def arguments(self, tool: Tool, facts: Facts | None = None) -> Json:
        return fill(tool.parameters, self.facts if facts is None else facts, self.draft)

    def call_id(self, index: int) -> str:
        # Derived from the conversation and the call's index: stable across replays, distinct per call.
        seed = json.dumps(self.messages, sort_keys=True) + f"#{index}"
        return "call_" + hashlib.sha256(seed.encode()).hexdigest()[:24]

    def reply(self, fault: str | None = None, params: Json | None = None) -> Reply:
        params = params or {}
        if fault == LOOP:
            return self._loop()
        if fault == UNKNOWN_TOOL:
            name = str(params.get("name") or "delete_all_customers")
            while name in {t.name for t in self.offered}:
                name += "_now"
            return self._calls([(name, "{}")])
        if not self.remaining:
            if fault in (BAD_ARGS, MALFORMED_ARGS) and self.plan:
                return self._calls([self._faulty(self.plan[0], fault)])
            return self._answer(broken_answer=fault == BAD_ANSWER)
        if fault in (BAD_ARGS, MALFORMED_ARGS):
            return self._calls([self._faulty(self.remaining[0], fault)])
        chosen = self.remaining[:1]
        if self.parallel:
            ready = [t for t in self.remaining if valid(t.parameters, self.arguments(t))]
            chosen = ready or chosen
        return self._calls([(t.name, json.dumps(self.arguments(t))) for t in chosen])

    def _loop(self) -> Reply:
        # The same call every turn: arguments from what the model knew before its first call, so what
        # the tools answered since cannot change them.
        first = next((i for i, m in enumerate(self.messages) if m.get("role") == "assistant"), None)
        before = facts_of(self.messages[:first])
        tools_ = self.plan or self.offered
        if not tools_:
            return self._calls([("search", "{}")])
        return self._calls([(tools_[0].name, json.dumps(self.arguments(tools_[0], before)))])

    def _faulty(self, tool: Tool, fault: str) -> tuple[str, str]:
        good = self.arguments(tool)
        if fault == MALFORMED_ARGS:
            return tool.name, json.dumps(good)[:-1]  # cut before its closing brace: not JSON
        return tool.name, json.dumps(broken(tool.parameters, good))

    def _calls(self, calls: list[tuple[str, str]]) -> Reply:
        tool_calls = [
            {"id": self.call_id(i), "type": "function", "function": {"name": name, "arguments": args}}
            for i, (name, args) in enumerate(calls)
        ]
        produced = " ".join(f"{name} {args}" for name, args in calls)
        return Reply({"role": "assistant", "content": None, "tool_calls": tool_calls}, "tool_calls", produced)

    def _answer(self, broken_answer: bool) -> Reply:
        subject, body = self.draft()
        kind = self.fmt.get("type")
        if kind == "json_schema":
            spec = self.fmt.get("json_schema")
            schema = spec.get("schema") if isinstance(spec, dict) else None
            answer: Any = fill(schema or {}, self.facts, self.draft)
            content = json.dumps(nulled(schema or {}, answer) if broken_answer else answer)
        elif kind == "json_object":
            content = json.dumps({"subject": None if broken_answer else subject, "body": body})
        else:
            content = f"Subject: {subject}\n\n{body}"
        return Reply({"role": "assistant", "content": content}, "stop", content)
