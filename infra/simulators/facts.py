"""What a simulated model "knows" from a conversation, and how it fills a JSON Schema from that (pure).

Facts are the scalar fields of the JSON objects in the conversation: any object embedded in a user or
system message's text, and every tool result (a tool message's JSON content). Nested objects are
flattened, a leaf being known by its own key; later facts win on a name clash. A schema's properties
are filled from them the way a careful model would: the field of the same name, else a field whose
value fits the property's pattern, format or enum, else a plain default.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker

Json = dict[str, Any]
Facts = dict[str, Any]  # insertion order is recency: a re-learnt name moves to the end
MISSING = object()

_DECODER = json.JSONDecoder()
_CHECKER = FormatChecker()


def text_of(content: Any) -> str:
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def objects_in(text: str) -> list[Json]:
    """Every JSON object embedded in free text, outermost first; braces that do not parse are skipped."""
    found: list[Json] = []
    i = text.find("{")
    while i != -1:
        try:
            value, end = _DECODER.raw_decode(text, i)
        except ValueError:
            i = text.find("{", i + 1)
            continue
        if isinstance(value, dict):
            found.append(value)
        i = text.find("{", end)
    return found


def _learn(facts: Facts, value: Any, key: str | None = None) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _learn(facts, v, str(k))
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict):
                _learn(facts, item)
    elif key is not None and value is not None:
        facts.pop(key, None)  # move to the end: the latest value is the most recent fact
        facts[key] = value


def facts_of(messages: list[Json]) -> Facts:
    facts: Facts = {}
    for message in messages:
        role = message.get("role")
        if role in ("user", "system"):
            for obj in objects_in(text_of(message.get("content"))):
                _learn(facts, obj)
        elif role == "tool":
            try:
                _learn(facts, json.loads(text_of(message.get("content"))))
            except ValueError:
                pass  # a tool answer in prose teaches nothing we can fill a field with
    return facts


def valid(schema: Any, value: Any) -> bool:
    if not isinstance(schema, dict):
        return True
    return bool(Draft202012Validator(schema, format_checker=_CHECKER).is_valid(value))


def _type_of(schema: Json) -> str | None:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    if kind is None and "anyOf" in schema:  # pydantic's optional fields: anyOf [{...}, {type: null}]
        for option in schema["anyOf"]:
            if isinstance(option, dict) and option.get("type") != "null":
                return _type_of(option)
    return kind if isinstance(kind, str) else None


def _constrained(schema: Json) -> bool:
    if any(k in schema for k in ("pattern", "format", "enum")):
        return True
    return any(isinstance(o, dict) and _constrained(o) for o in schema.get("anyOf") or [])


def _enum_of(schema: Json) -> list[Any] | None:
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return list(schema["enum"])
    for option in schema.get("anyOf") or []:
        if isinstance(option, dict) and _enum_of(option):
            return _enum_of(option)
    return None


def from_facts(name: str, schema: Json, facts: Facts) -> Any:
    """The fact of the same name that fits; else, for a constrained property, the latest fact that fits."""
    if name in facts and valid(schema, facts[name]):
        return facts[name]
    if _constrained(schema):
        for value in reversed(facts.values()):
            if valid(schema, value):
                return value
    return MISSING


def default_for(name: str, schema: Json, draft: tuple[str, str]) -> Any:
    """What a model writes when nothing it knows fits: words for text, the smallest number, false."""
    enum = _enum_of(schema)
    if enum:
        return enum[0]
    kind = _type_of(schema)
    if kind in ("integer", "number"):
        if "minimum" in schema:
            low = schema["minimum"]
        else:
            low = schema["exclusiveMinimum"] + 1 if "exclusiveMinimum" in schema else 1
        return int(low) if kind == "integer" else low
    if kind == "boolean":
        return False
    if kind == "object":
        return {}
    if kind == "array":
        return []
    subject, sentence = draft
    return subject if any(w in name.lower() for w in ("subject", "title")) else sentence


def properties(schema: Any) -> tuple[Json, list[str]]:
    if not isinstance(schema, dict):
        return {}, []
    props = schema.get("properties")
    required = schema.get("required")
    return (
        props if isinstance(props, dict) else {},
        [r for r in required if isinstance(r, str)] if isinstance(required, list) else [],
    )


def fill(schema: Any, facts: Facts, draft: Callable[[], tuple[str, str]]) -> Json:
    """An object for `schema`: required properties always, optional ones only when a fact fits."""
    props, required = properties(schema)
    filled: Json = {}
    for name, prop in props.items():
        prop = prop if isinstance(prop, dict) else {}
        value = from_facts(name, prop, facts)
        if value is MISSING and name in required:
            value = default_for(name, prop, draft())
        if value is not MISSING:
            filled[name] = value
    return filled


def broken(schema: Any, good: Json) -> Any:
    """Arguments that break `schema`: a required property dropped, another given the wrong type."""
    props, required = properties(schema)
    if not props:
        return []  # not even an object: breaks `type: object`, the one thing a tool schema always says
    bad = dict(good)
    dropped = required[0] if required else None
    if dropped is not None:
        bad.pop(dropped, None)
    other = next((n for n in [*required, *props] if n != dropped), None)
    if other is not None:
        prop = props.get(other)
        kind = _type_of(prop) if isinstance(prop, dict) else None
        bad[other] = "not-a-number" if kind in ("integer", "number", "boolean") else 12345
    return bad


def nulled(schema: Any, good: Json) -> Json:
    """An answer that breaks `schema`: its first required property (else its first property) null."""
    props, required = properties(schema)
    target = required[0] if required else next(iter(props), None)
    return {**good, target: None} if target is not None else {**good, "answer": None}
