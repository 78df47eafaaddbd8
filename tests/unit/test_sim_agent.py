"""The model simulator as an agent: a scripted tool-calling conversation over real HTTP, with the
helpdesk and email simulators answering the calls, and each model fault."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator

from infra.simulators.dedup import effect_id
from infra.simulators.runner import running
from keel.schemas import REPO_ROOT
from keel.tooldefs import load_definition

DEFS = {
    d.name: d
    for d in (
        load_definition(REPO_ROOT / "tools" / f)
        for f in ("lookup_customer.v1.yaml", "refund_charge.v1.yaml", "email.v1.yaml")
    )
}
# What an agent step sends: each tool as an OpenAI function, its input schema as the parameters.
TOOLS = [
    {
        "type": "function",
        "function": {"name": d.name, "description": d.description, "parameters": d.input_schema},
    }
    for d in DEFS.values()
]
TICKET = {
    "ticket_id": "T-1042",
    "customer_email": "ada.lovelace@example.com",
    "amount_cents": 1999,
    "text": "I was charged twice for my order",
}
SYSTEM = "You are a support agent. Look the customer up, refund what the ticket asks for, reply by email."
ANSWER = {
    "type": "object",
    "additionalProperties": False,
    "required": ["refund_id", "message_id"],
    "properties": {
        "refund_id": {"type": "string"},
        "message_id": {"type": "string"},
        "note": {"type": "string"},
    },
}
RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "triage", "schema": ANSWER}}
MODEL = {"Authorization": "Bearer sim-model-token"}


@pytest.fixture(scope="module")
def urls() -> Iterator[dict[str, str]]:
    with running("model") as model, running("helpdesk") as helpdesk, running("email") as email:
        yield {"model": model, "helpdesk": helpdesk, "email": email}


@pytest.fixture
def model(urls: dict[str, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=urls["model"], headers=MODEL, trust_env=False, timeout=10) as client:
        client.post("/_reset").raise_for_status()
        yield client


def start(system: str = SYSTEM) -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": f"New ticket: {json.dumps(TICKET)}"},
    ]


def turn(model: httpx.Client, messages: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    body = {"model": "sim-medium", "messages": messages, "tools": TOOLS, "response_format": RESPONSE_FORMAT}
    response = model.post("/v1/chat/completions", json={**body, **extra})
    assert response.status_code == 200, response.text
    choice: dict[str, Any] = response.json()["choices"][0]
    return choice


def calls(choice: dict[str, Any]) -> list[tuple[str, Any]]:
    return [
        (c["function"]["name"], json.loads(c["function"]["arguments"]))
        for c in choice["message"]["tool_calls"]
    ]


def perform(urls: dict[str, str], name: str, args: dict[str, Any]) -> dict[str, Any]:
    """What Keel's adapters would do for the call: the provider's real answer."""
    if name == "lookup_customer":
        answer = httpx.get(
            f"{urls['helpdesk']}/v1/customers",
            params={"email": args["customer_email"]},
            headers={"Authorization": "Bearer sim-helpdesk-token"},
        )
    elif name == "refund_charge":
        answer = httpx.post(
            f"{urls['helpdesk']}/v1/refunds",
            json=args,
            headers={"Authorization": "Bearer sim-helpdesk-token"},
        )
    else:
        answer = httpx.post(
            f"{urls['email']}/v1/messages", json=args, headers={"Authorization": "Bearer sim-email-token"}
        )
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def answer_calls(
    urls: dict[str, str], messages: list[dict[str, Any]], choice: dict[str, Any]
) -> list[dict[str, Any]]:
    """The conversation after the model's calls were made and answered."""
    messages = [*messages, choice["message"]]
    for call in choice["message"]["tool_calls"]:
        name, args = call["function"]["name"], json.loads(call["function"]["arguments"])
        result = perform(urls, name, args)
        messages.append({"role": "tool", "tool_call_id": call["id"], "content": json.dumps(result)})
    return messages


def refused(messages: list[dict[str, Any]], choice: dict[str, Any], why: str) -> list[dict[str, Any]]:
    """The conversation after Keel refused the model's calls: the error is each call's result."""
    results = [
        {"role": "tool", "tool_call_id": c["id"], "content": json.dumps({"error": why})}
        for c in choice["message"]["tool_calls"]
    ]
    return [*messages, choice["message"], *results]


def valid_call(name: str, args: Any) -> bool:
    return Draft202012Validator(DEFS[name].input_schema).is_valid(args)


def test_the_planner_looks_up_then_refunds_then_emails_then_answers(
    model: httpx.Client, urls: dict[str, str]
) -> None:
    messages = start()
    first = turn(model, messages)
    assert first["finish_reason"] == "tool_calls"
    assert calls(first) == [("lookup_customer", {"customer_email": TICKET["customer_email"]})]
    messages = answer_calls(urls, messages, first)
    customer = json.loads(messages[-1]["content"])

    second = turn(model, messages)
    assert calls(second) == [("refund_charge", {"charge_id": customer["charge_id"], "amount_cents": 1999})]
    messages = answer_calls(urls, messages, second)
    refund = json.loads(messages[-1]["content"])

    third = turn(model, messages)
    [(name, email)] = calls(third)
    assert name == "email" and email["to"] == customer["email"] and valid_call("email", email)
    messages = answer_calls(urls, messages, third)
    sent = json.loads(messages[-1]["content"])

    final = turn(model, messages)
    assert final["finish_reason"] == "stop" and not final["message"].get("tool_calls")
    assert json.loads(final["message"]["content"]) == {
        "refund_id": refund["refund_id"],
        "message_id": sent["message_id"],
    }
    # Deterministic: the same conversation gets the same calls, ids included.
    assert turn(model, messages[:4]) == second
    assert model.get("/_stats").json()["deliveries"] == 5


def test_in_parallel_the_model_asks_for_every_call_it_can_fill_at_once(
    model: httpx.Client, urls: dict[str, str]
) -> None:
    messages = start(SYSTEM + " Make independent calls in parallel.")
    first = turn(model, messages)
    # The refund needs the charge id, which only the lookup gives: it waits for the next turn.
    assert [name for name, _ in calls(first)] == ["lookup_customer", "email"]
    ids = [c["id"] for c in first["message"]["tool_calls"]]
    assert len(set(ids)) == 2
    messages = answer_calls(urls, messages, first)
    assert [name for name, _ in calls(turn(model, messages))] == ["refund_charge"]


def test_a_looping_model_repeats_its_first_call_while_the_fault_lasts(
    model: httpx.Client, urls: dict[str, str]
) -> None:
    model.post("/_faults", json={"kind": "loop", "times": 4}).raise_for_status()
    messages, seen = start(), []
    for _ in range(4):
        choice = turn(model, messages)
        seen += calls(choice)
        messages = answer_calls(urls, messages, choice)
    assert seen == [("lookup_customer", {"customer_email": TICKET["customer_email"]})] * 4
    assert [name for name, _ in calls(turn(model, messages))] == ["refund_charge"]  # the fault spent


def test_an_unknown_tool_once_then_the_model_corrects_itself(model: httpx.Client) -> None:
    model.post("/_faults", json={"kind": "unknown_tool"}).raise_for_status()
    messages = start()
    wrong = turn(model, messages)
    assert calls(wrong) == [("delete_all_customers", {})]
    messages = refused(messages, wrong, "unknown tool delete_all_customers")
    assert calls(turn(model, messages)) == [("lookup_customer", {"customer_email": TICKET["customer_email"]})]
    assert model.post("/_faults", json={"kind": "unknown_tool", "name": ""}).status_code == 422


def test_bad_arguments_break_the_schema_once(model: httpx.Client, urls: dict[str, str]) -> None:
    messages = start()
    messages = answer_calls(urls, messages, turn(model, messages))  # the lookup
    model.post("/_faults", json={"kind": "bad_args"}).raise_for_status()
    bad = turn(model, messages)
    [(name, args)] = calls(bad)
    assert name == "refund_charge" and not valid_call(name, args)
    assert "charge_id" not in args and isinstance(args["amount_cents"], str)  # dropped, and a wrong type
    good = turn(model, refused(messages, bad, "invalid arguments"))
    [(name, args)] = calls(good)
    assert name == "refund_charge" and valid_call(name, args)


def test_malformed_arguments_are_not_json_once(model: httpx.Client) -> None:
    model.post("/_faults", json={"kind": "malformed_args"}).raise_for_status()
    messages = start()
    bad = turn(model, messages)
    [call] = bad["message"]["tool_calls"]
    assert call["function"]["name"] == "lookup_customer"
    with pytest.raises(ValueError):
        json.loads(call["function"]["arguments"])
    assert calls(turn(model, refused(messages, bad, "arguments are not JSON")))[0][0] == "lookup_customer"


def test_a_bad_final_answer_breaks_the_schema_once(model: httpx.Client, urls: dict[str, str]) -> None:
    messages = start()
    for _ in range(3):
        messages = answer_calls(urls, messages, turn(model, messages))
    model.post("/_faults", json={"kind": "bad_answer"}).raise_for_status()
    bad = turn(model, messages)
    assert bad["finish_reason"] == "stop"
    broken = json.loads(bad["message"]["content"])
    assert broken["refund_id"] is None and not Draft202012Validator(ANSWER).is_valid(broken)
    fixed = turn(
        model, [*messages, bad["message"], {"role": "user", "content": "refund_id: None is not a string"}]
    )
    assert Draft202012Validator(ANSWER).is_valid(json.loads(fixed["message"]["content"]))


def test_each_agent_turn_is_counted_under_its_logical_effect(model: httpx.Client) -> None:
    tags = {"keel_tenant": "acme", "keel_run": "run-1", "keel_step": "triage", "keel_call": "turn-1"}
    for _ in range(2):
        turn(model, start(), metadata=tags, tool_choice="auto", max_tokens=256, store=False, temperature=0)
    turn(model, start(), metadata={**tags, "keel_call": "turn-2"})
    by_effect = model.get("/_stats").json()["by_effect"]
    assert by_effect == {
        effect_id("acme", "run-1", "triage", "turn-1"): 2,
        effect_id("acme", "run-1", "triage", "turn-2"): 1,
    }
