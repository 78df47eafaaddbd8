"""Tiny, safe templating for workflow inputs and prompts: `{{ input.x }}` and `{{ steps.NAME.output.f }}`."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

_EXPR = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
# Field segments allow hyphens and digits (list indexes) because they walk into arbitrary JSON.
_PATH = re.compile(r"^(input|steps)(\.[A-Za-z0-9_-]+)+$")


class TemplateError(ValueError):
    """A template is malformed, or a path it names is missing from the context."""


def build_context(input: Mapping[str, Any], outputs: Mapping[str, Any]) -> dict[str, Any]:
    """The context `render` reads: the run input and each committed step's output."""
    return {"input": dict(input), "steps": {name: {"output": out} for name, out in outputs.items()}}


def _parse(expr: str) -> tuple[str, ...]:
    path, shown = expr.strip(), "{{ " + " ".join(expr.split()) + " }}"
    if not _PATH.match(path):
        raise TemplateError(f"bad template expression {shown}: expected input.FIELD or steps.NAME.output")
    parts = tuple(path.split("."))
    if parts[0] == "steps" and (len(parts) < 3 or parts[2] != "output"):
        raise TemplateError(f"bad template expression {shown}: steps are read as steps.NAME.output[.FIELD]")
    return parts


def _split(text: str) -> list[str]:
    """Alternating literal text and expressions; rejects a stray `{{` so typos fail at load time."""
    pieces = _EXPR.split(text)
    if any("{{" in literal for literal in pieces[::2]):
        raise TemplateError(f"unclosed '{{{{' in template {text!r}")
    return pieces


def paths(value: Any) -> list[tuple[str, ...]]:
    """Every path referenced anywhere in a template value (strings inside dicts and lists included)."""
    if isinstance(value, str):
        return [_parse(expr) for expr in _split(value)[1::2]]
    if isinstance(value, Mapping):
        return [p for v in value.values() for p in paths(v)]
    if isinstance(value, list | tuple):
        return [p for v in value for p in paths(v)]
    return []


def references(value: Any) -> set[str]:
    """Names of the steps whose outputs a template value reads."""
    return {p[1] for p in paths(value) if p[0] == "steps"}


def _resolve(parts: tuple[str, ...], context: Mapping[str, Any]) -> Any:
    current: Any = context
    for i, seg in enumerate(parts):
        if isinstance(current, Mapping) and seg in current:
            current = current[seg]
        elif isinstance(current, list) and seg.isdigit() and int(seg) < len(current):
            current = current[int(seg)]
        else:
            where = ".".join(parts[:i]) or "context"
            raise TemplateError(f"template path {'.'.join(parts)!r} not found: no {seg!r} in {where}")
    return current


def _as_text(value: Any) -> str:
    # Sorted keys so the same data always renders the same text (it may feed an idempotency key).
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)


def render(value: Any, context: Mapping[str, Any]) -> Any:
    """Render a template value; a string that is exactly one `{{ ... }}` keeps the referenced JSON type."""
    if isinstance(value, str):
        pieces = _split(value)
        if len(pieces) == 3 and pieces[0] == "" and pieces[2] == "":
            return _resolve(_parse(pieces[1]), context)
        return "".join(_as_text(_resolve(_parse(p), context)) if i % 2 else p for i, p in enumerate(pieces))
    if isinstance(value, Mapping):
        return {k: render(v, context) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [render(v, context) for v in value]
    return value


def render_text(template: str, context: Mapping[str, Any]) -> str:
    """Render a prompt: always text, even when it is a single reference to a JSON object."""
    return _as_text(render(template, context))
