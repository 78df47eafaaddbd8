"""Where in a workflow's data each validation problem lies, as a location path (for JSON paths and lines).

pydantic gives field errors their location; the graph checks run on the whole workflow, so their
messages name the step instead. This recovers the step's place from those messages."""

from __future__ import annotations

import re
from typing import Any

_STEP = re.compile(r"^step '([^']+)' (needs|reads)")
_DUPLICATE = re.compile(r"^duplicate step name '([^']+)'")
_CYCLE = re.compile(r"^cycle in needs: ([^ ]+) ->")
_FALLBACK = re.compile(r"^step '([^']+)' (on_quarantine|on_failure|approval\.on_timeout) falls back")
_FALLBACK_ONLY = re.compile(r"^fallback-only step '([^']+)' is no step's fallback")


def _index(data: Any, name: str, last: bool = False) -> int | None:
    steps = data.get("steps") if isinstance(data, dict) else None
    found = [i for i, s in enumerate(steps or []) if isinstance(s, dict) and s.get("name") == name]
    return (found[-1] if last else found[0]) if found else None


def graph_location(message: str, data: Any) -> tuple[str | int, ...]:
    """The location a whole-workflow message is about (`()` when it names no step)."""
    if m := _STEP.match(message):
        i = _index(data, m.group(1))
        if i is None:
            return ()
        if m.group(2) == "needs":
            return ("steps", i, "needs")
        templated = "prompt" if data["steps"][i].get("kind") in ("llm", "approval") else "input"
        return ("steps", i, templated)
    if m := _FALLBACK.match(message):
        i = _index(data, m.group(1))
        return () if i is None else ("steps", i, *m.group(2).split("."))
    if m := _FALLBACK_ONLY.match(message):
        i = _index(data, m.group(1))
        return () if i is None else ("steps", i, "fallback_only")
    if m := _DUPLICATE.match(message):
        i = _index(data, m.group(1), last=True)
        return () if i is None else ("steps", i, "name")
    if m := _CYCLE.match(message):
        i = _index(data, m.group(1))
        return () if i is None else ("steps", i, "needs")
    return ()
