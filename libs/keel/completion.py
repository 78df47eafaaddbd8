"""Reading a chat completion: token usage and the assistant's message, normalised to one shape.

The message is what an agent's next turn sends back and what its scheduler checks, so it always has the
OpenAI shape, whatever small liberties a provider took: `{"role": "assistant", "content": str | None,
"tool_calls": [{"id", "type": "function", "function": {"name", "arguments": str}}]}`, `tool_calls`
omitted when there are none. Anything that cannot be read that way is drift: a `validation` failure.
"""

from __future__ import annotations

import json
from typing import Any

from keel.idempotency import canonical_json


class Drift(ValueError):
    """The provider's answer does not have the shape of a chat completion."""


def usage_of(doc: Any) -> tuple[int, int]:
    """(prompt tokens, completion tokens); read first, so an answer that drifted is still paid for."""
    try:
        usage = doc["usage"]
        return int(usage["prompt_tokens"]), int(usage["completion_tokens"])
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise Drift(f"malformed completion ({type(exc).__name__}: {exc})") from exc


def message_of(doc: Any, tools_offered: bool) -> dict[str, Any]:
    """The first choice's message, normalised. Without tools offered (an llm step) the answer must be
    text; with tools, tool calls alone are an answer, and a message with neither says nothing."""
    try:
        raw = doc["choices"][0]["message"]
        content = raw.get("content")
        raw_calls = raw.get("tool_calls")
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise Drift(f"malformed completion ({type(exc).__name__}: {exc})") from exc
    if content is not None and not isinstance(content, str):
        raise Drift(f"completion content is a {type(content).__name__}, not text")
    calls = _tool_calls(raw_calls)
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if not tools_offered:
        if content is None:  # tool calls nobody offered are no answer to an llm step either
            raise Drift("completion has no text content")
        return message
    if calls:
        message["tool_calls"] = calls
    elif not content:
        raise Drift("completion has neither text nor tool calls")
    return message


def _tool_calls(raw: Any) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise Drift(f"tool_calls is a {type(raw).__name__}, not a list")
    return [_tool_call(i, call) for i, call in enumerate(raw)]


def _tool_call(index: int, call: Any) -> dict[str, Any]:
    where = f"tool_calls[{index}]"
    if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
        raise Drift(f"{where} is not an object with a function")
    if call.get("type", "function") != "function":
        raise Drift(f"{where} is of type {call.get('type')!r}, not a function call")
    function = call["function"]
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise Drift(f"{where} names no function")
    arguments = function.get("arguments")
    if arguments is None:  # some providers leave it out for a call without parameters
        arguments = "{}"
    elif isinstance(arguments, dict | list):  # some send the object itself rather than its JSON text
        arguments = canonical_json(arguments)
    elif not isinstance(arguments, str):
        raise Drift(f"{where}.function.arguments is a {type(arguments).__name__}, not JSON text")
    # Arguments that are not JSON are kept as they came: whoever checks the call refuses them and tells
    # the model why, so the model may correct itself (that is no fault of the provider's).
    call_id = call.get("id")
    if call_id is not None and not isinstance(call_id, str):
        raise Drift(f"{where}.id is not a string")
    return {
        # A provider that gives no ids still needs one per call: the results go back under it.
        "id": call_id or f"call-{index}",
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }


def parse_json_object(content: str | None) -> dict[str, Any]:
    if content is None:
        raise Drift("completion has no text content")
    try:
        parsed = json.loads(content)
    except ValueError as exc:
        raise Drift(f"response is not valid JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise Drift(f"expected a JSON object, got {type(parsed).__name__}")
    return parsed
