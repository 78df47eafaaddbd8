"""The model router's request and answer shapes for agent turns: tools, tool calls, metadata, schemas.
Pure HTTP client logic, so each provider answer is played by an httpx.MockTransport."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from keel.pricing import cost_usd
from services.executor.router import ModelError, ModelRequest, ModelRouter, RouterSettings

MESSAGES = [{"role": "user", "content": "Refund order 42."}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "issue_refund",
            "description": "Refund an order.",
            "parameters": {"type": "object", "properties": {"order": {"type": "string"}}},
        },
    }
]
TAGS = {"keel_tenant": "acme", "keel_run": "r-1", "keel_step": "triage", "keel_call": "turn-1"}
USAGE = {"prompt_tokens": 100, "completion_tokens": 20}


def completion(message: dict[str, Any]) -> dict[str, Any]:
    return {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}], "usage": USAGE}


def serving(
    message: dict[str, Any], seen: list[dict[str, Any]] | None = None
) -> Callable[[httpx.Request], httpx.Response]:
    def reply(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(json.loads(request.content))
        return httpx.Response(200, json=completion(message))

    return reply


def ask(
    reply: Callable[[httpx.Request], httpx.Response], settings: RouterSettings | None = None, **req: Any
) -> Any:
    with httpx.Client(transport=httpx.MockTransport(reply)) as http:
        request = ModelRequest(model="sim-small", messages=req.pop("messages", MESSAGES), **req)
        return ModelRouter(settings or RouterSettings(), http).complete(request)


CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "issue_refund", "arguments": '{"order": "42"}'},
}


def test_tool_calls_with_null_content_are_an_answer() -> None:
    seen: list[dict[str, Any]] = []
    answer = ask(serving({"role": "assistant", "content": None, "tool_calls": [CALL]}, seen), tools=TOOLS)
    assert answer.message == {"role": "assistant", "content": None, "tool_calls": [CALL]}
    assert answer.content is None and answer.parsed is None
    assert answer.cost_usd == cost_usd("sim-small", 100, 20)
    assert seen[0]["tools"] == TOOLS


def test_a_text_answer_has_no_tool_calls_key() -> None:
    answer = ask(serving({"role": "assistant", "content": "Done: refunded."}), tools=TOOLS)
    assert answer.message == {"role": "assistant", "content": "Done: refunded."}


def test_tool_calls_are_normalised() -> None:
    # Providers differ in small ways: arguments as an object, no id, no type. The message the scheduler
    # keeps is always the OpenAI shape, so the next turn can send it back as it is.
    loose = {"function": {"name": "issue_refund", "arguments": {"order": "42"}}}
    no_args = {"id": "c2", "type": "function", "function": {"name": "issue_refund"}}
    answer = ask(serving({"content": "", "tool_calls": [loose, no_args]}), tools=TOOLS)
    assert answer.message == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "call-0",
                "type": "function",
                "function": {"name": "issue_refund", "arguments": '{"order":"42"}'},
            },
            {"id": "c2", "type": "function", "function": {"name": "issue_refund", "arguments": "{}"}},
        ],
    }


@pytest.mark.parametrize(
    "message",
    [
        {"role": "assistant", "content": None},  # neither text nor tool calls
        {"role": "assistant", "content": None, "tool_calls": []},
        {"role": "assistant", "content": "", "tool_calls": None},  # an empty final answer says nothing
        {"role": "assistant", "content": None, "tool_calls": {"id": "x"}},  # not a list
        {"role": "assistant", "content": None, "tool_calls": ["issue_refund"]},  # not objects
        {"role": "assistant", "content": None, "tool_calls": [{"id": "x", "function": {"arguments": "{}"}}]},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "x", "function": {"name": ""}}]},
        {"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "f", "arguments": 3}}]},
        {"role": "assistant", "content": None, "tool_calls": [{"type": "code", "function": {"name": "f"}}]},
        {"role": "assistant", "content": 42},
    ],
)
def test_drifted_messages_are_validation_and_still_costed(message: dict[str, Any]) -> None:
    with pytest.raises(ModelError) as caught:
        ask(serving(message), tools=TOOLS)
    assert caught.value.failure_class == "validation", caught.value.message
    assert caught.value.cost_usd == cost_usd("sim-small", 100, 20)  # the provider was paid all the same


def test_an_llm_step_still_needs_text() -> None:
    # Without tools offered, an answer of tool calls alone has nothing an llm step can use.
    with pytest.raises(ModelError) as caught:
        ask(serving({"role": "assistant", "content": None, "tool_calls": [CALL]}))
    assert caught.value.failure_class == "validation"


def test_metadata_is_sent_and_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, Any]] = []
    ask(serving({"content": "ok"}, seen), metadata=TAGS)
    assert seen[-1]["metadata"] == TAGS
    monkeypatch.setenv("KEEL_MODEL_METADATA", "false")  # for providers that refuse the field
    ask(serving({"content": "ok"}, seen), RouterSettings(), metadata=TAGS)
    assert "metadata" not in seen[-1]
    ask(serving({"content": "ok"}, seen))
    assert "metadata" not in seen[-1] and "tools" not in seen[-1]  # nothing sent that was not asked for


def test_a_json_schema_response_format_is_sent_as_json_schema() -> None:
    seen: list[dict[str, Any]] = []
    schema = {"type": "object", "required": ["reply"], "properties": {"reply": {"type": "string"}}}
    answer = ask(serving({"content": '{"reply": "hi"}'}, seen), response_format=schema, max_tokens=77)
    assert seen[0]["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "final_answer", "schema": schema},
    }
    assert seen[0]["max_tokens"] == 77
    # The answer is checked against the schema by whoever asked (the agent's final answer may be refused
    # and corrected): the router only hands the message back.
    assert answer.message["content"] == '{"reply": "hi"}'
    ask(serving({"content": "{}"}, seen), response_format="json")
    assert seen[-1]["response_format"] == {"type": "json_object"}
