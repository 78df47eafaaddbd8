"""Recorded production runs (tests/golden/recordings, made with `keel record` from real runs on the
e2e stack) replayed through today's scheduler core and parsers: what was decided and parsed then is
what today's code decides and parses, with no network at all."""

from __future__ import annotations

import copy
import json
import socket

import pytest
from replay_kit import assert_decides_the_same, assert_replays, load, replay_step

from keel.recording import Recording, RecordingError, record
from keel.replay import NotRecorded
from keel.tooldefs import parse_definition
from keel_ops.replay_core import replay_scheduler

DRIFT = "$.refund_id: None is not of type 'string'"


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """A replay that tried to reach a provider, a model or the API fails here: no socket connects."""

    def refuse(*_args, **_kwargs):
        raise AssertionError("a replay opened a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.parametrize("name", ["drifted_refund", "retried_refund", "llm_note", "agent_triage"])
def test_todays_scheduler_core_decides_what_was_decided(name):
    assert_decides_the_same(load(name))


def test_a_drifted_answer_replays_to_its_recorded_validation_failure():
    found = assert_replays(load("drifted_refund"), "refund")
    assert found.recorded.error == DRIFT and found.now.error == DRIFT
    assert found.answer["refund_id"] is None and found.input["charge_id"] == "ch_1a2b3c"


def test_a_fix_to_the_output_contract_is_checked_against_the_recorded_bad_answer():
    rec = load("drifted_refund")
    fixed = rec.tools["refund@1"].model_dump(mode="json", by_alias=True, exclude_unset=True)
    fixed = copy.deepcopy(fixed)
    # The fix under review: the provider's refund id may be null in its answer, and the effect is
    # known by the charge it refunded.
    fixed["output_schema"]["properties"]["refund_id"] = {"type": ["string", "null"]}
    fixed["output_schema"]["required"] = ["charge_id", "amount_cents", "status"]
    fixed["external_id"] = "charge_id"
    found = replay_step(rec, "refund", definition=parse_definition(fixed))
    assert found.now.ok and found.now.output["charge_id"] == "ch_1a2b3c"
    assert not found.same and found.diff == [f"recorded: failed: {DRIFT}\ntoday:    succeeds"]


def test_a_half_fix_is_shown_to_fail_another_way():
    rec = load("drifted_refund")
    half = rec.tools["refund@1"].model_dump(mode="json", by_alias=True, exclude_unset=True)
    half["output_schema"]["properties"]["refund_id"] = {"type": ["string", "null"]}
    found = replay_step(rec, "refund", definition=parse_definition(half))
    assert not found.now.ok and "the provider's id of the effect is missing" in (found.now.error or "")
    assert found.diff and "today's failure" in found.diff[0]


def test_a_retried_send_replays_its_answered_attempt_and_its_retry_reason():
    rec = load("retried_refund")
    found = assert_replays(rec, "refund")
    assert found.attempt == 2 and found.now.output["refund_id"].startswith("re_")
    core = assert_decides_the_same(rec)
    [retry] = [d for d in core.replayed if d["event"] == "retry_scheduled"]
    assert retry["retry"]["failure_class"] == "unknown_outcome"
    assert "provider_key adapter makes repeating with the same key safe" in retry["retry"]["reason"]


def test_an_attempt_with_no_recorded_answer_is_an_error_never_a_call():
    with pytest.raises(NotRecorded, match="no recorded provider answer"):
        replay_step(load("retried_refund"), "refund", attempt=1)
    with pytest.raises(NotRecorded, match="no attempt 7"):
        replay_step(load("retried_refund"), "refund", attempt=7)


def test_an_llm_step_replays_over_the_recorded_model_answer():
    found = assert_replays(load("llm_note"), "note")
    assert found.kind == "llm" and found.now.output["text"]


def test_an_output_schema_the_recorded_answer_breaks_is_shown_as_a_diff():
    from keel.replay import replay_model

    schema = {"type": "object", "required": ["summary"]}
    found = replay_model(load("llm_note"), "note", output_schema=schema)
    assert not found.now.ok and "response is not valid JSON" in (found.now.error or "")


def test_a_changed_decision_is_caught_by_the_core_replay():
    doc = copy.deepcopy(load("retried_refund").doc)
    retry = next(e for e in doc["events"] if e["event"] == "retry_scheduled")
    retry["retry"]["reason"] = "a reason today's core does not give"
    core = replay_scheduler(Recording(doc))
    assert not core.same and "a reason today's core does not give" in core.diff[0]


def test_claim_checked_payloads_are_resolved_into_the_recording_and_needed_by_the_replay():
    rec = load("drifted_refund")
    events = [dict(e) for e in rec.doc["events"]]
    failed = next(e for e in events if e["event"] == "tool_failed")
    store = {failed["output_ref"]: rec.output_of(rec.events[events.index(failed)])}
    for e in events:  # as a large answer travels: by ref only, held by the blob store
        if e.get("output_ref") == failed["output_ref"]:
            e["output_json"] = None
    doc = record(events, store.__getitem__, rec.doc["workflow"], rec.doc["tools"])
    assert doc["blobs"] == store
    assert replay_step(Recording(doc), "refund").recorded.error == DRIFT
    doc["blobs"] = {}  # a recording that skipped resolving them cannot replay the step
    with pytest.raises(RecordingError, match="does not hold the payload"):
        replay_step(Recording(doc), "refund")


def test_a_recording_of_another_format_version_is_refused():
    doc = dict(load("llm_note").doc, format_version=99)
    with pytest.raises(RecordingError, match="version 99"):
        Recording(doc)


def test_an_agent_turn_and_its_tool_call_replay_from_the_recording():
    rec = load("agent_triage")
    turn = assert_replays(rec, "triage", call="turn-2")
    [asked] = turn.now.output["tool_calls"]
    assert turn.kind == "turn" and asked["function"]["name"] == "refund_charge"
    call = assert_replays(rec, "triage", call="turn-2.call-0")
    assert call.kind == "tool" and call.now.output["refund_id"].startswith("re_")


def test_a_turn_answer_the_executor_cannot_read_today_is_shown_as_a_diff():
    doc = copy.deepcopy(load("agent_triage").doc)
    called = next(e for e in doc["events"] if e["event"] == "model_called" and e["call"] == "turn-2")
    message = json.loads(called["output_json"])
    message["tool_calls"] = message["tool_calls"][0]  # one call, not a list: a drifted answer
    called["output_json"] = json.dumps(message)
    found = replay_step(Recording(doc), "triage", call="turn-2")
    assert not found.now.ok and "tool_calls is a dict, not a list" in (found.now.error or "")
    assert found.diff and found.diff[0].startswith("recorded: succeeded")


def test_keel_replay_checks_a_fixed_definition_file_against_the_recording(tmp_path, capsys):
    from replay_kit import RECORDINGS

    from keel_ops import cli

    rec = load("drifted_refund")
    fixed = rec.tools["refund@1"].model_dump(mode="json", by_alias=True, exclude_unset=True)
    fixed["output_schema"]["properties"]["refund_id"] = {"type": ["string", "null"]}
    fixed["output_schema"]["required"] = ["charge_id", "amount_cents", "status"]
    fixed["external_id"] = "charge_id"
    path = tmp_path / "refund.v1.yaml"
    path.write_text(json.dumps(fixed))  # JSON is YAML
    recording = str(RECORDINGS / "drifted_refund.json")
    assert cli.main(["replay", recording, "--step", "refund", "--as-recorded"]) == 0
    assert "diff: none" in capsys.readouterr().out
    assert cli.main(["replay", recording, "--step", "refund", "--tool-file", str(path)]) == 2
    out = capsys.readouterr().out
    assert f"recorded: failed: {DRIFT}" in out and "today:    succeeds" in out
    assert f"parsed with the definition in {path}" in out


def test_an_agent_step_without_a_call_is_refused_with_what_to_name(capsys):
    from replay_kit import RECORDINGS

    from keel_ops import cli

    assert cli.main(["replay", str(RECORDINGS / "agent_triage.json"), "--step", "triage"]) == 1
    assert "name a turn or tool call with --call" in capsys.readouterr().err
