"""Replay (docs/replay.md): a real run recorded over the API (`keel record`), and a step of it re-executed
from the recording with no network: the recorded input and outcome come back, and the simulators see
no request at all. With KEEL_SAVE_RECORDINGS=DIR the recordings are kept (tests/golden/recordings)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest
from harness import E2E_ENV
from helpers import wait_for
from test_runs import submit

from keel.recording import Recording
from keel.replay import NotRecorded, replay_tool
from keel_ops import cli
from keel_ops.cli_runs import ApiError
from keel_ops.cli_runs import api as call

pytestmark = pytest.mark.e2e
REFUND = {"charge_id": "ch_1a2b3c", "amount_cents": 1250}
SIMS = ("email", "crm", "model", "payments", "helpdesk")


@pytest.fixture
def api(stack):
    return stack.model_copy(update={"api_url": E2E_ENV["KEEL_API_URL"], "api_key": "acme-dev-key"})


def _recorded(api, run_id: str, last: str, name: str, tmp_path: Path, golden: bool = True) -> Path:
    """The run recorded over the API once its projection holds `last`; kept under a name if asked."""

    def projected() -> bool:
        try:
            return last in [e["event"] for e in call(api, "GET", f"/v1/runs/{run_id}/events")["events"]]
        except ApiError:
            return False

    wait_for(projected, 30, f"{last} of {run_id} in the API")
    path = tmp_path / f"{name}.json"
    assert cli.main(["record", run_id, "--out", str(path)]) == 0
    keep = os.environ.get("KEEL_SAVE_RECORDINGS")
    if keep and golden:  # a recording of megabytes proves its point here, not in the repository
        Path(keep).mkdir(parents=True, exist_ok=True)
        (Path(keep) / f"{name}.json").write_text(path.read_text())
    return path


def _deliveries(sims) -> dict[str, object]:
    return {name: sims.stats(name) for name in SIMS}


@pytest.fixture
def cli_env(api, monkeypatch):
    monkeypatch.setenv("KEEL_API_URL", api.api_url)
    monkeypatch.setenv("KEEL_API_KEY", api.api_key)


def test_a_drifted_answer_replays_to_its_recorded_failure_with_no_call(
    stack, sims, events, api, cli_env, tmp_path, capsys
):
    sims.fault("payments", kind="null_field", field="refund_id")
    run_id = submit(stack, "refund_once", REFUND)
    assert events.wait_terminal(run_id) == "quarantined"
    path = _recorded(api, run_id, "quarantined", "drifted_refund", tmp_path)
    rec = Recording.load(str(path))
    assert [e.event_id for e in rec.events] == [e.event_id for e in events.of(run_id)]  # log order, all
    before = _deliveries(sims)

    capsys.readouterr()
    assert cli.main(["replay", str(path), "--step", "refund"]) == 0  # the same definition: same outcome
    out = capsys.readouterr().out
    assert "$.refund_id: None is not of type 'string'" in out
    assert json.dumps(REFUND)[1:-1].split(",")[0] in out  # the recorded input is shown
    assert "scheduler core today: decides the same" in out
    assert _deliveries(sims) == before  # no provider saw a request


def test_a_retried_send_replays_both_attempts_and_a_missing_answer_is_an_error(
    stack, sims, events, api, cli_env, tmp_path, capsys
):
    sims.fault("payments", kind="accept_then_timeout", ms=2500)
    run_id = submit(stack, "refund_once", REFUND)
    assert events.wait_terminal(run_id) == "completed"
    path = _recorded(api, run_id, "completed", "retried_refund", tmp_path)
    before = _deliveries(sims)
    assert cli.main(["replay", str(path), "--step", "refund"]) == 0
    out = capsys.readouterr().out
    assert "provider_key adapter makes repeating with the same key safe" in out
    assert "scheduler core today: decides the same" in out
    # The first attempt timed out: no answer was recorded, and the replay says so rather than asking.
    assert cli.main(["replay", str(path), "--step", "refund", "--attempt", "1"]) == 1
    assert "no recorded provider answer" in capsys.readouterr().err
    with pytest.raises(NotRecorded):
        replay_tool(Recording.load(str(path)), "refund", attempt=1)
    assert _deliveries(sims) == before


def test_an_llm_step_replays_over_the_recorded_model_answer(
    stack, sims, events, api, cli_env, tmp_path, capsys
):
    run_id = submit(stack, "budget_note", {"topic": "replay"})
    assert events.wait_terminal(run_id) == "completed"
    path = _recorded(api, run_id, "completed", "llm_note", tmp_path)
    before = _deliveries(sims)
    assert cli.main(["replay", str(path), "--step", "note"]) == 0
    out = capsys.readouterr().out
    assert "diff: none" in out and "decides the same" in out
    assert _deliveries(sims) == before


def test_an_agent_turn_and_its_tool_call_replay_from_the_recording(
    stack, sims, events, api, cli_env, tmp_path, capsys
):
    ticket = {
        "ticket_id": "T-1042",
        "customer_email": "ada@example.com",
        "amount_cents": 1500,
        "text": "I was charged twice for my May invoice. Please refund the duplicate.",
    }
    run_id = submit(stack, "support_triage", {"ticket": ticket})
    assert events.wait_terminal(run_id, 90) == "completed"
    path = _recorded(api, run_id, "completed", "agent_triage", tmp_path)
    before = _deliveries(sims)
    assert cli.main(["replay", str(path), "--step", "triage", "--call", "turn-2"]) == 0
    out = capsys.readouterr().out
    assert "(turn)" in out and "refund_charge" in out and "diff: none" in out
    assert cli.main(["replay", str(path), "--step", "triage", "--call", "turn-2.call-0"]) == 0
    out = capsys.readouterr().out
    assert "(tool)" in out and "re_" in out and "decides the same" in out
    assert _deliveries(sims) == before


def test_record_over_the_api_resolves_claim_checked_payloads(
    stack, sims, events, api, cli_env, tmp_path, capsys
):
    # The CRM echoes the activity's kind: its answer is too large to travel inline, so it is a blob.
    big = {"contact": "ada@example.com", "kind": "k" * (300 * 1024), "note": "replay"}
    run_id = call(api, "POST", "/v1/runs", json={"workflow": "big_payloads", "input": big})["keel_run_id"]
    assert events.wait_terminal(run_id, 120) == "completed"
    path = _recorded(api, run_id, "completed", "big_payloads", tmp_path, golden=False)
    rec = Recording.load(str(path))
    assert rec.blobs, "no payload of the run was claim-checked: the test proves nothing"
    assert any(v.get("kind") == big["kind"] for v in rec.blobs.values() if isinstance(v, dict))
    for e in rec.events:  # every payload an event names is readable from the recording alone
        rec.input_of(e), rec.output_of(e)
    assert rec.workflow is not None and rec.workflow.name == "big_payloads" and "crm@1" in rec.tools
    before = _deliveries(sims)
    assert cli.main(["replay", str(path), "--step", "log"]) == 0
    assert "diff: none" in capsys.readouterr().out
    assert _deliveries(sims) == before


def test_the_api_twin_replays_a_step_and_checks_a_fix_with_no_call(stack, sims, events, api, tmp_path):
    """`POST /v1/runs/{id}/replay`: the recorded drift comes back, a fixed definition in the body is checked
    against the recorded bad answer, a turn and its tool call replay, and no simulator sees a request."""
    sims.fault("payments", kind="null_field", field="refund_id")
    run_id = submit(stack, "refund_once", REFUND)
    assert events.wait_terminal(run_id) == "quarantined"
    _recorded(api, run_id, "quarantined", "api_drift", tmp_path, golden=False)  # projected by now
    before = _deliveries(sims)

    found = call(api, "POST", f"/v1/runs/{run_id}/replay", json={"step": "refund"})
    assert found["kind"] == "tool" and found["attempt"] == 1 and found["same"] is True
    assert found["input"]["charge_id"] == REFUND["charge_id"] and found["answer"]["refund_id"] is None
    assert (
        not found["recorded"]["ok"] and "$.refund_id: None is not of type 'string'" in found["today"]["error"]
    )
    assert found["parsed_with"] == "the deployed definition of refund@1"
    assert [a["attempt"] for a in found["attempts"]] == [1]

    fixed = call(api, "GET", f"/v1/runs/{run_id}/definitions")["tools"]["refund@1"]
    fixed["output_schema"]["properties"]["refund_id"] = {"type": ["string", "null"]}
    fixed["output_schema"]["required"] = ["charge_id", "amount_cents", "status"]
    fixed["external_id"] = "charge_id"
    checked = call(
        api, "POST", f"/v1/runs/{run_id}/replay", json={"step": "refund", "tool_definition": fixed}
    )
    assert checked["today"]["ok"] and checked["today"]["output"]["charge_id"] == REFUND["charge_id"]
    assert checked["same"] is False and checked["diff"][0].startswith("recorded: failed:")
    assert checked["parsed_with"] == "the definition in the request of refund@1"

    def post(body: dict[str, object], key: str = "acme-dev-key") -> httpx.Response:
        url = f"{api.api_url}/v1/runs/{run_id}/replay"
        return httpx.post(url, json=body, headers={"Authorization": f"Bearer {key}"}, trust_env=False)

    missing = post({"step": "refund", "attempt": 7})  # never recorded: an error, never a call
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_recorded"
    bad = post({"step": "refund", "tool_definition": {"tool": "refund"}})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_definition"
    foreign = post({"step": "refund"}, key="globex-dev-key")  # another tenant's run is not there at all
    assert foreign.status_code == 404
    assert _deliveries(sims) == before  # ground truth: no provider saw a request
