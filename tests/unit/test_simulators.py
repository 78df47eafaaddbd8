"""Simulators under real HTTP: idempotent delivery, fault injection, and the model server's determinism."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from infra.simulators.dedup import effect_id
from infra.simulators.runner import running

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parents[2]
EMAIL_AUTH = {"Authorization": "Bearer sim-email-token"}
CRM_AUTH = {"Authorization": "Bearer sim-crm-token"}
MODEL_AUTH = {"Authorization": "Bearer sim-model-token"}
MESSAGE = {"to": "ada@example.com", "subject": "Hello", "body": "First draft", "from": "bot@example.com"}


def _client(url: str, headers: dict[str, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, headers=headers, timeout=5.0) as client:
        client.post("/_reset").raise_for_status()
        yield client


@pytest.fixture
def email(email_url: str) -> Iterator[httpx.Client]:
    yield from _client(email_url, EMAIL_AUTH)


@pytest.fixture
def crm(crm_url: str) -> Iterator[httpx.Client]:
    yield from _client(crm_url, CRM_AUTH)


@pytest.fixture
def model(model_url: str) -> Iterator[httpx.Client]:
    yield from _client(model_url, MODEL_AUTH)


def send(client: httpx.Client, key: str | None = None, **overrides: Any) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key else {}
    return client.post("/v1/messages", json={**MESSAGE, **overrides}, headers=headers)


def stats(client: httpx.Client) -> dict[str, Any]:
    response = client.get("/_stats")
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def counted(client: httpx.Client, **expected: Any) -> dict[str, Any]:
    """The figures of GET /_stats named in `expected` (so a new figure does not break older tests)."""
    figures = stats(client)
    return {name: figures[name] for name in expected}


def program(client: httpx.Client, *rules: dict[str, Any]) -> None:
    client.post("/_faults", json=list(rules)).raise_for_status()


# --- idempotency -------------------------------------------------------------------------------------


def test_same_key_replays_without_second_delivery(email: httpx.Client) -> None:
    first, second = send(email, "k1"), send(email, "k1")
    assert first.status_code == second.status_code == 200
    assert first.json()["message_id"].startswith("msg_")
    assert first.json() == second.json() == {**first.json(), "status": "accepted", "to": MESSAGE["to"]}
    assert "Idempotent-Replayed" not in first.headers
    assert second.headers["Idempotent-Replayed"] == "true"
    expected = {"deliveries": 1, "requests": 2, "by_key": {"k1": 1}, "replays": 1, "faults_fired": {}}
    assert counted(email, **expected) == expected


def test_same_key_different_body_is_refused(email: httpx.Client) -> None:
    assert send(email, "k1").status_code == 200
    refused = send(email, "k1", body="Another draft")
    assert refused.status_code == 422
    assert refused.json()["error"]["type"] == "idempotency_error"
    assert stats(email)["deliveries"] == 1


def test_without_key_every_send_is_delivered(email: httpx.Client) -> None:
    ids = {send(email).json()["message_id"], send(email).json()["message_id"]}
    assert len(ids) == 2
    assert stats(email)["deliveries"] == 2
    assert stats(email)["by_key"] == {}


def test_concurrent_sends_with_one_key_deliver_once(email_url: str, email: httpx.Client) -> None:
    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=email_url, headers=EMAIL_AUTH, timeout=5.0) as client:
            sends = [
                client.post("/v1/messages", json=MESSAGE, headers={"Idempotency-Key": "burst"})
                for _ in range(20)
            ]
            return await asyncio.gather(*sends)

    responses = asyncio.run(burst())
    assert {r.status_code for r in responses} == {200}
    assert len({r.json()["message_id"] for r in responses}) == 1
    expected = {"deliveries": 1, "requests": 20, "by_key": {"burst": 1}, "replays": 19, "faults_fired": {}}
    assert counted(email, **expected) == expected


def test_get_and_lookup_by_key(email: httpx.Client) -> None:
    message_id = send(email, "k1").json()["message_id"]
    stored = email.get(f"/v1/messages/{message_id}").json()
    assert stored["subject"] == MESSAGE["subject"] and stored["from"] == MESSAGE["from"]
    assert email.get("/v1/messages", params={"idempotency_key": "k1"}).json()["message_id"] == message_id
    assert email.get("/v1/messages", params={"idempotency_key": "nope"}).status_code == 404
    assert email.get("/v1/messages/msg_missing").status_code == 404
    assert [m["message_id"] for m in email.get("/v1/messages").json()["data"]] == [message_id]


def test_crm_activity_is_idempotent_and_looked_up(crm: httpx.Client) -> None:
    activity = {"contact_email": "ada@example.com", "kind": "email_sent", "note": "intro"}
    first = crm.post("/v1/activities", json=activity, headers={"Idempotency-Key": "a1"})
    second = crm.post("/v1/activities", json=activity, headers={"Idempotency-Key": "a1"})
    body = first.json()
    assert body["activity_id"].startswith("act_") and body["kind"] == "email_sent" and body["created_at"]
    assert second.json() == body and second.headers["Idempotent-Replayed"] == "true"
    assert crm.get(f"/v1/activities/{body['activity_id']}").json()["note"] == "intro"
    found = crm.get("/v1/activities", params={"idempotency_key": "a1"}).json()
    assert found["activity_id"] == body["activity_id"]
    changed = crm.post("/v1/activities", json={**activity, "note": "x"}, headers={"Idempotency-Key": "a1"})
    assert changed.status_code == 422
    assert stats(crm)["deliveries"] == 1 and stats(crm)["by_key"] == {"a1": 1}


# --- ground truth per logical effect, and the dedup modes ------------------------------------------

TAGS = {"keel_tenant": "acme", "keel_run": "run-1", "keel_step": "send"}
EFFECT = effect_id("acme", "run-1", "send")


def mode(client: httpx.Client, dedup: str) -> httpx.Response:
    return client.post("/_mode", json={"dedup": dedup})


def test_every_delivery_counts_under_its_effect_whatever_the_key(email: httpx.Client) -> None:
    assert send(email, "k1", metadata=TAGS).status_code == 200
    assert send(email, "k1", metadata=TAGS).headers["Idempotent-Replayed"] == "true"  # a replay: no delivery
    assert send(email, "k2", metadata=TAGS).status_code == 200  # a new key for the same effect
    assert send(email, metadata=TAGS).status_code == 200  # no key at all
    assert send(email, metadata={**TAGS, "keel_call": "turn-1/0"}).status_code == 200
    assert send(email, "k3").status_code == 200  # names no effect
    assert counted(email, deliveries=0, by_effect=0, by_key=0, without_effect=0) == {
        "deliveries": 5,
        "by_effect": {EFFECT: 3, effect_id("acme", "run-1", "send", "turn-1/0"): 1},
        "by_key": {"k1": 1, "k2": 1, "k3": 1},
        "without_effect": 1,
    }


def test_none_mode_delivers_every_post_and_lookup_still_finds_the_first(email: httpx.Client) -> None:
    assert mode(email, "none").json() == {"dedup": "none"}
    first, second = send(email, "k1", metadata=TAGS), send(email, "k1", metadata=TAGS)
    assert first.status_code == second.status_code == 200
    assert first.json()["message_id"] != second.json()["message_id"]
    assert "Idempotent-Replayed" not in second.headers
    found = email.get("/v1/messages", params={"idempotency_key": "k1"}).json()
    assert found["message_id"] == first.json()["message_id"] and found["metadata"] == TAGS
    expected = {"deliveries": 2, "by_key": {"k1": 2}, "by_effect": {EFFECT: 2}, "replays": 0, "dedup": "none"}
    assert counted(email, **expected) == expected
    email.post("/_reset").raise_for_status()
    assert stats(email)["dedup"] == "key"  # a reset goes back to the start-up mode


def test_unknown_mode_is_refused(email: httpx.Client) -> None:
    refused = mode(email, "sometimes")
    assert refused.status_code == 422 and refused.json()["error"]["type"] == "invalid_mode"
    assert email.get("/_mode").json() == {"dedup": "key"}


def test_stripe_mode_refuses_a_second_request_while_the_first_is_in_flight(
    email_url: str, email: httpx.Client
) -> None:
    mode(email, "stripe").raise_for_status()
    program(email, {"kind": "latency", "ms": 1500})
    with httpx.Client(base_url=email_url, headers=EMAIL_AUTH, timeout=5.0) as other:
        with ThreadPoolExecutor(1) as pool:
            slow = pool.submit(send, other, "k1", metadata=TAGS)
            wait_for_figure(email, "requests", 1)
            busy = send(email, "k1", metadata=TAGS)
            first = slow.result()
    assert busy.status_code == 409 and busy.json()["error"]["type"] == "idempotency_key_in_use"
    assert first.status_code == 200
    again = send(email, "k1", metadata=TAGS)  # once the first is done: an ordinary replay
    assert again.headers["Idempotent-Replayed"] == "true" and again.json() == first.json()
    expected = {
        "deliveries": 1,
        "refused_in_flight": 1,
        "by_effect": {EFFECT: 1},
        "faults_fired": {"latency": 1},
    }
    assert counted(email, **expected) == expected


def test_key_mode_lets_concurrent_requests_wait_for_each_other(email_url: str, email: httpx.Client) -> None:
    program(email, {"kind": "latency", "ms": 500})
    with httpx.Client(base_url=email_url, headers=EMAIL_AUTH, timeout=5.0) as other:
        with ThreadPoolExecutor(1) as pool:
            slow = pool.submit(send, other, "k1")
            wait_for_figure(email, "requests", 1)
            quick = send(email, "k1")
            assert slow.result().json() == quick.json()
    assert counted(email, deliveries=0, refused_in_flight=0) == {"deliveries": 1, "refused_in_flight": 0}


@pytest.mark.parametrize(("dedup", "deliveries"), [("key", 1), ("none", 2)])
def test_accept_then_error_delivers_and_then_answers_5xx(
    email: httpx.Client, dedup: str, deliveries: int
) -> None:
    mode(email, dedup).raise_for_status()
    program(email, {"kind": "accept_then_error", "status": 502})
    failed = send(email, "k1", metadata=TAGS)
    assert failed.status_code == 502 and failed.json()["error"]["type"] == "server_error"
    assert stats(email)["deliveries"] == 1  # the effect happened although the answer says it failed
    retry = send(email, "k1", metadata=TAGS)
    assert retry.status_code == 200
    expected = {"deliveries": deliveries, "by_effect": {EFFECT: deliveries}}
    assert counted(email, **expected) == expected


def test_the_start_mode_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEL_SIM_CRM_DEDUP", "none")
    activity = {"contact_email": "ada@example.com", "kind": "email_sent", "metadata": TAGS}
    with running("crm") as url, httpx.Client(base_url=url, headers=CRM_AUTH, timeout=5.0) as crm:
        for _ in range(2):
            crm.post("/v1/activities", json=activity, headers={"Idempotency-Key": "a1"}).raise_for_status()
        expected = {"dedup": "none", "deliveries": 2, "by_effect": {EFFECT: 2}, "by_key": {"a1": 2}}
        assert counted(crm, **expected) == expected


def wait_for_figure(client: httpx.Client, name: str, at_least: int) -> None:
    """Wait (bounded by the module's timeout) until a request reached the simulator."""
    while stats(client)[name] < at_least:
        time.sleep(0.01)


# --- faults ------------------------------------------------------------------------------------------


def test_missing_or_wrong_token_and_auth_fault_give_401(email_url: str, email: httpx.Client) -> None:
    assert httpx.post(f"{email_url}/v1/messages", json=MESSAGE).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert httpx.post(f"{email_url}/v1/messages", json=MESSAGE, headers=wrong).status_code == 401
    program(email, {"kind": "auth"})
    assert send(email, "k1").status_code == 401
    assert stats(email)["deliveries"] == 0
    assert send(email, "k1").status_code == 200
    assert stats(email)["faults_fired"] == {"auth": 1}


def test_rate_limit_then_success(email: httpx.Client) -> None:
    program(email, {"kind": "rate_limit", "params": {"retry_after": 2}})
    limited = send(email, "k1")
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "2"
    assert stats(email)["deliveries"] == 0
    assert send(email, "k1").status_code == 200
    assert stats(email)["deliveries"] == 1


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_error_then_success(email: httpx.Client, status: int) -> None:
    program(email, {"kind": "error", "params": {"status": status}})
    assert send(email, "k1").status_code == status
    assert send(email, "k1").status_code == 200
    assert stats(email)["deliveries"] == 1 and stats(email)["replays"] == 0


def test_accept_then_timeout_delivers_once_and_retry_replays(email_url: str, email: httpx.Client) -> None:
    program(email, {"kind": "accept_then_timeout", "params": {"ms": 1500}})
    with httpx.Client(base_url=email_url, headers=EMAIL_AUTH, timeout=0.3) as impatient:
        with pytest.raises(httpx.TimeoutException):
            send(impatient, "k1")
    assert stats(email)["deliveries"] == 1  # the provider did send it: the outcome was only unknown to us
    found = email.get("/v1/messages", params={"idempotency_key": "k1"})
    assert found.status_code == 200
    retry = send(email, "k1")
    assert retry.json()["message_id"] == found.json()["message_id"]
    assert retry.headers["Idempotent-Replayed"] == "true"
    expected = {
        "deliveries": 1,
        "requests": 3,
        "by_key": {"k1": 1},
        "replays": 1,
        "faults_fired": {"accept_then_timeout": 1},
    }
    assert counted(email, **expected) == expected


def test_accept_then_timeout_without_key_is_the_double_send(email_url: str, email: httpx.Client) -> None:
    program(email, {"kind": "accept_then_timeout", "ms": 1000})  # flat params are accepted too
    with httpx.Client(base_url=email_url, headers=EMAIL_AUTH, timeout=0.3) as impatient:
        with pytest.raises(httpx.TimeoutException):
            send(impatient)
    assert send(email).status_code == 200
    assert stats(email)["deliveries"] == 2


def test_null_field_drifts_response_but_delivers(email: httpx.Client) -> None:
    program(email, {"kind": "null_field", "params": {"field": "message_id"}})
    drifted = send(email, "k1")
    assert drifted.status_code == 200 and drifted.json()["message_id"] is None
    assert stats(email)["deliveries"] == 1
    real = email.get("/v1/messages", params={"idempotency_key": "k1"}).json()["message_id"]
    assert send(email, "k1").json()["message_id"] == real  # the replay carries the true id


def test_latency_then_normal(email: httpx.Client) -> None:
    program(email, {"kind": "latency", "params": {"ms": 200}})
    started = time.monotonic()
    assert send(email, "k1").status_code == 200
    assert time.monotonic() - started >= 0.2
    assert stats(email)["deliveries"] == 1


def test_faults_are_consumed_in_order_with_after_and_path(email: httpx.Client) -> None:
    program(
        email,
        {"kind": "error", "times": 2},
        {"kind": "rate_limit", "params": {"retry_after": 0}},
        {"kind": "error", "path": "/v1/messages/", "method": "GET", "params": {"status": 503}},
        {"kind": "error", "after": 4, "params": {"status": 502}},
    )
    pending = email.get("/_faults").json()["pending"]
    assert [p["kind"] for p in pending] == ["error", "rate_limit", "error", "error"]
    assert [send(email, "k1").status_code for _ in range(6)] == [500, 500, 429, 200, 502, 200]
    # The GET rule's prefix is "/v1/messages/", so the lookup by key passes and a fetch by id fails.
    assert email.get("/v1/messages", params={"idempotency_key": "k1"}).status_code == 200
    assert email.get("/v1/messages/whatever").status_code == 503
    assert email.get("/_faults").json()["pending"] == []
    assert stats(email)["faults_fired"] == {"error": 4, "rate_limit": 1}


def test_invalid_fault_rules_are_refused(email: httpx.Client) -> None:
    for rule in (
        {"kind": "loop"},
        {"kind": "bogus"},
        {"kind": "error", "params": {"status": 418}},
        {"kind": "null_field"},
        {"kind": "latency", "times": 0},
    ):
        assert email.post("/_faults", json=[rule]).status_code == 422, rule
    assert email.get("/_faults").json()["pending"] == []


# --- model server ------------------------------------------------------------------------------------

CHAT = {
    "model": "sim-small",
    "temperature": 0.2,
    "messages": [
        {"role": "system", "content": "You write short emails."},
        {"role": "user", "content": "Draft a note to Ada about the pilot"},
    ],
}
TOOLS = [
    {"type": "function", "function": {"name": "send_email", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "lookup_contact", "parameters": {"type": "object"}}},
]


def chat(client: httpx.Client, **overrides: Any) -> dict[str, Any]:
    response = client.post("/v1/chat/completions", json={**CHAT, **overrides})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def test_model_is_deterministic_with_usage(model: httpx.Client) -> None:
    first, second = chat(model), chat(model)
    assert first["object"] == "chat.completion" and first["model"] == "sim-small"
    assert first["choices"] == second["choices"] and first["usage"] == second["usage"]
    content = first["choices"][0]["message"]["content"]
    usage = first["usage"]
    assert usage["prompt_tokens"] == 4 + 8
    assert usage["completion_tokens"] == len(content.split())
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert chat(model, model="sim-large")["choices"][0]["message"]["content"] != content
    assert stats(model)["deliveries"] == 3


def test_model_json_object_and_tool_call(model: httpx.Client) -> None:
    drafted = chat(model, response_format={"type": "json_object"})
    assert set(json.loads(drafted["choices"][0]["message"]["content"])) == {"subject", "body"}
    ask = [{"role": "user", "content": "please call tool lookup_contact for Ada"}]
    called = chat(model, messages=ask, tools=TOOLS)["choices"][0]
    assert called["finish_reason"] == "tool_calls"
    assert called["message"]["tool_calls"][0]["function"] == {"name": "lookup_contact", "arguments": "{}"}
    after_tool = [*ask, called["message"], {"role": "tool", "tool_call_id": "x", "content": "found"}]
    assert chat(model, messages=after_tool, tools=TOOLS)["choices"][0]["finish_reason"] == "stop"


def test_model_loop_fault_keeps_calling_the_same_tool(model: httpx.Client) -> None:
    program(model, {"kind": "loop", "times": 3})
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Draft a note"}]
    names = []
    for _ in range(3):
        choice = chat(model, messages=messages, tools=TOOLS)["choices"][0]
        assert choice["finish_reason"] == "tool_calls"
        names.append(choice["message"]["tool_calls"][0]["function"]["name"])
        messages += [choice["message"], {"role": "tool", "tool_call_id": "x", "content": "ok"}]
    assert names == ["send_email"] * 3
    # The fault spent, the model goes back to its plan: the tool it has not called yet, then its answer.
    resumed = chat(model, messages=messages, tools=TOOLS)["choices"][0]
    assert [c["function"]["name"] for c in resumed["message"]["tool_calls"]] == ["lookup_contact"]
    messages += [resumed["message"], {"role": "tool", "tool_call_id": "x", "content": "ok"}]
    assert chat(model, messages=messages, tools=TOOLS)["choices"][0]["finish_reason"] == "stop"


def test_model_lists_models_and_needs_token(model_url: str, model: httpx.Client) -> None:
    ids = [m["id"] for m in model.get("/v1/models").json()["data"]]
    assert {"sim-small", "sim-large"} <= set(ids)
    assert httpx.post(f"{model_url}/v1/chat/completions", json=CHAT).status_code == 401


# --- command line ------------------------------------------------------------------------------------


def test_command_line_announces_and_serves() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "infra.simulators", "crm", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()  # bounded by the module's pytest timeout
        assert line.startswith("keel-sim crm listening on http://127.0.0.1:")
        url = line.rsplit(" ", 1)[1]
        assert httpx.get(f"{url}/_stats", timeout=5).json()["deliveries"] == 0
    finally:
        proc.terminate()
        # uvicorn shuts down gracefully, then re-raises the signal so the exit status says why it stopped.
        assert proc.wait(timeout=10) in (0, -signal.SIGTERM)
