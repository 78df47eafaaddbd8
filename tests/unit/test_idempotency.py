"""The frozen formats: golden values that must never change."""

import pytest

from keel.deadletter import dead_letter_id
from keel.idempotency import agent_call_key, canonical_json, content_ref, idempotency_key


def test_canonical_json_ignores_key_order_and_whitespace():
    assert canonical_json({"b": 1, "a": [1, {"d": "é", "c": None}]}) == '{"a":[1,{"c":null,"d":"é"}],"b":1}'


def test_idempotency_key_golden_value():
    payload = {"to": "lead@example.com", "subject": "Hello", "body": "Hi there"}
    assert idempotency_key("acme", "outbound_email", "run-1", "send_email", payload) == (
        "acme|outbound_email|run-1|send_email|"
        "sha256:00585211153de9c1aee54156c3251fa59e13347b59baeebc91ae33a878c89fc8"
    )


def test_same_payload_in_any_key_order_gives_the_same_key():
    a = idempotency_key("t", "w", "r", "s", {"x": 1, "y": [2, 3]})
    b = idempotency_key("t", "w", "r", "s", {"y": [2, 3], "x": 1})
    assert a == b and a != idempotency_key("t", "w", "r", "s", {"x": 1, "y": [3, 2]})


@pytest.mark.parametrize("bad", ["", "a|b"])
def test_key_parts_must_not_be_empty_or_contain_the_separator(bad):
    with pytest.raises(ValueError):
        idempotency_key(bad, "w", "r", "s", {})


def test_content_ref_golden_value():
    assert content_ref({}) == "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"


def test_dead_letter_id_golden_value():
    assert dead_letter_id("keel.run-requests", 2, 41) == "keel.run-requests:2:41"


REFUND = {"charge_id": "ch_1001", "amount_cents": 1500, "reason": "requested_by_customer"}


def test_agent_write_call_key_golden_value_has_no_turn():
    key = agent_call_key(
        "acme",
        "support_triage",
        "run-1",
        "triage",
        "issue_refund@1",
        REFUND,
        side_effects=True,
        turn=2,
        index=0,
    )
    assert key == (
        "acme|support_triage|run-1|triage|issue_refund@1|"
        "sha256:a8a91fa5d186369cd2dfe6a9ff7cb94e962e99e6c1009fec17028ea83b9508dd"
    )
    # The same write asked for in a later turn, at another index, is the same effect.
    later = agent_call_key(
        "acme",
        "support_triage",
        "run-1",
        "triage",
        "issue_refund@1",
        dict(reversed(REFUND.items())),
        side_effects=True,
        turn=5,
        index=1,
    )
    assert later == key


def test_agent_read_call_key_golden_value_names_turn_and_call():
    args = {"customer_email": "ada@example.com"}
    key = agent_call_key(
        "acme",
        "support_triage",
        "run-1",
        "triage",
        "lookup_customer@1",
        args,
        side_effects=False,
        turn=1,
        index=0,
    )
    assert key == (
        "acme|support_triage|run-1|triage|lookup_customer@1|turn-1.call-0|"
        "sha256:797b59b8230b7b9f86eaafba22bf3e935344178cd3edc5c68516848704aff602"
    )
    again = agent_call_key(
        "acme",
        "support_triage",
        "run-1",
        "triage",
        "lookup_customer@1",
        args,
        side_effects=False,
        turn=3,
        index=0,
    )
    assert again != key


@pytest.mark.parametrize("bad", ["", "a|b"])
def test_agent_call_key_parts_must_not_be_empty_or_contain_the_separator(bad):
    with pytest.raises(ValueError):
        agent_call_key("t", "w", "r", "s", bad, {}, side_effects=True, turn=1, index=0)
