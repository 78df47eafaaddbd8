"""Cases, decisions, approvals and run control over the HTTP API, against the real broker and database.

The API only reads projections and produces control commands: these tests read each command back from
their own control topic, and stand in for the run's scheduler by projecting what it would write
(`quarantine_resolved`, `decision_refused`) with the command's id, while the API waits for it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator

import apistack
import pytest
from apistack import ACME, GLOBEX, Api
from helpers import make_topics, read_topic, unique, wait_for
from unit import case_stories as cs
from unit.test_projection_core import Story

from keel.contracts import ControlCommand
from keel.serde import Serde, register_contracts, registry_client
from keel.settings import Settings

pytestmark = pytest.mark.integration
OPERATOR = {"Authorization": "Bearer ops-dev-key"}
OPERATOR_ID = "key:ops-dev"  # the principal id of the development operator key


class Cases:
    def __init__(self, api: Api, control: str) -> None:
        self.api, self.control, self.client = api, control, api.client
        self.serde = Serde(registry_client(api.settings.schema_registry_url), {control: "control_command"})
        self.held = cs.quarantined_send(unique("run"))
        self.approval = cs.awaiting_approval(unique("run"))
        self.theirs = cs.quarantined_send(unique("run"), tenant="globex")
        api.project(self.held.events + self.approval.events + self.theirs.events)
        self.case = f"{self.held.run_id}:send_email:1"
        self.approval_case = f"{self.approval.run_id}:refund:approval-1"
        self.their_case = f"{self.theirs.run_id}:send_email:1"

    def commands(self, expect: int | None = None) -> list[tuple[str, ControlCommand]]:
        msgs = read_topic(self.api.settings, self.control, expect=expect)
        return [(m.key().decode(), self.serde.decode(self.control, m.value())) for m in msgs]

    def scheduler(
        self, story: Story, answer: Callable[[Story, ControlCommand], None], nth: int = 1
    ) -> threading.Thread:
        """The run's scheduler, stood in for: waits for the nth command to the story's run (commands to
        one run keep their order: one partition), answers it into the projection."""

        def run() -> None:
            found: list[ControlCommand] = []

            def arrived() -> bool:
                found[:] = [x for _, x in self.commands() if x.run_id == story.run_id]
                return len(found) >= nth

            wait_for(arrived, timeout=20, what=f"command #{nth} to {story.run_id}")
            answer(story, found[nth - 1])
            self.api.project(story.events[-1:])

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread


@pytest.fixture
def cases(stack: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cases]:
    monkeypatch.delenv("KEEL_API_KEYS", raising=False)
    monkeypatch.delenv("KEEL_OPERATOR_KEYS", raising=False)
    control = unique("test.control")
    make_topics(stack, control, partitions=3)
    register_contracts(registry_client(stack.schema_registry_url), {control: "control_command"})
    monkeypatch.setenv("KEEL_API_CONTROL_TOPIC", control)
    monkeypatch.setenv("KEEL_API_DECISION_WAIT_S", "8")
    for api in apistack.open_api(stack):
        yield Cases(api, control)


def decide(c: Cases, case: str, headers: dict[str, str] = OPERATOR, **body: object):  # noqa: ANN201
    return c.client.post(f"/v1/quarantine/{case}/decide", headers=headers, json=body)


def test_tenants_see_their_own_cases_and_operators_every_tenants(cases):
    c = cases
    mine = c.client.get("/v1/quarantine", headers=ACME).json()["cases"]
    assert {x["case_id"] for x in mine} == {c.case, c.approval_case}
    assert {x["case_id"] for x in c.client.get("/v1/quarantine", headers=GLOBEX).json()["cases"]} == {
        c.their_case
    }
    everyone = c.client.get("/v1/quarantine", headers=OPERATOR).json()["cases"]
    assert {c.case, c.approval_case, c.their_case} <= {x["case_id"] for x in everyone}
    only = c.client.get("/v1/quarantine", headers=OPERATOR, params={"tenant": "globex", "kind": "quarantine"})
    assert {x["tenant_id"] for x in only.json()["cases"]} == {"globex"}
    # A tenant filtering on another tenant sees nothing of it.
    assert c.client.get("/v1/quarantine", headers=ACME, params={"tenant": "globex"}).json()["cases"] == []

    shown = c.client.get(f"/v1/quarantine/{c.case}", headers=ACME).json()
    assert (shown["kind"], shown["status"], shown["failure_class"], shown["input"]) == (
        "quarantine", "open", "unknown_outcome", cs.SEND_INPUT,
    )  # fmt: skip
    assert [(a["attempt"], a["status"], a["failure_class"]) for a in shown["attempts"]] == [
        (1, "failed", "unknown_outcome")
    ]
    for path in (f"/v1/quarantine/{c.their_case}", "/v1/quarantine/nope"):
        reply = c.client.get(path, headers=ACME)
        assert (reply.status_code, reply.json()["error"]["code"]) == (404, "case_not_found")
    assert c.client.get("/v1/quarantine", headers={"Authorization": "Bearer nope"}).status_code == 401

    approvals = c.client.get("/v1/approvals", headers=ACME).json()["cases"]
    assert [(a["case_id"], a["input_ref"]) for a in approvals] == [(c.approval_case, "sha256:" + "3" * 64)]
    assert c.client.get("/v1/approvals", headers=GLOBEX).json()["cases"] == []


def test_only_an_operator_decides_and_a_bad_payload_is_refused_with_its_json_path(cases):
    c = cases
    reply = decide(c, c.case, ACME, decision="retry", reason="looks fine")
    assert (reply.status_code, reply.json()["error"]["code"]) == (403, "forbidden")
    assert decide(c, c.case, {}, decision="retry", reason="x").status_code == 401
    bad = decide(c, c.case, decision="edit", reason="fix", input={"to": "not an address", "subject": ""})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_input"
    message = bad.json()["error"]["message"]
    assert "$.to" in message and "$.subject" in message and "'body' is a required property" in message
    bad = decide(c, c.case, decision="skip", reason="sent by hand", output={"status": "sent"})
    assert (bad.status_code, bad.json()["error"]["code"]) == (400, "invalid_output")
    assert "message_id" in bad.json()["error"]["message"]
    for body in (
        {"decision": "retry"},
        {"decision": "retry", "reason": " "},
        {"decision": "edit", "reason": "x"},
    ):
        assert decide(c, c.case, **body).status_code == 422  # type: ignore[arg-type]
    assert decide(c, "nope", decision="retry", reason="x").status_code == 404
    assert c.commands() == []  # nothing refused was sent


def test_a_decision_goes_to_the_runs_scheduler_and_answers_with_the_case_it_decided(cases):
    c = cases
    edited = {"to": "ada@example.org", "subject": "Hi", "body": "Hello Ada"}

    def resolve(story: Story, cmd: ControlCommand) -> None:
        args = json.loads(cmd.args_json or "{}")
        cs.resolve(story, args["case_id"], args["decision"], cmd.command_id, by=cmd.issued_by or "",
                   key="key-2", input=args["input"], reason=cmd.reason)  # fmt: skip

    scheduler = c.scheduler(c.held, resolve)
    reply = decide(c, c.case, decision="edit", reason="typo in the address", input=edited, new_effect=True)
    scheduler.join(10)
    assert reply.status_code == 200, reply.text
    case = reply.json()
    assert (case["status"], case["decision"], case["decided_by"], case["decision_reason"]) == (
        "decided", "edit", OPERATOR_ID, "typo in the address",
    )  # fmt: skip
    assert case["decision_key"] == "key-2" and case["decision_json"]["input"] == edited
    [(key, cmd)] = c.commands(expect=1)
    assert (key, cmd.run_id, cmd.tenant_id, cmd.action, cmd.step, cmd.issued_by) == (
        c.held.run_id, c.held.run_id, "acme", "decide", "send_email", OPERATOR_ID,
    )  # fmt: skip
    assert json.loads(cmd.args_json or "") == {
        "case_id": c.case, "decision": "edit", "input": edited, "new_effect": True,
    }  # fmt: skip
    # Decided: a second decision is refused at once, and sends nothing.
    again = decide(c, c.case, decision="fail", reason="changed my mind")
    assert (again.status_code, again.json()["error"]["code"]) == (409, "already_decided")
    assert len(c.commands()) == 1


def test_a_decision_another_got_in_first_or_the_scheduler_refused_is_a_409(cases):
    c = cases

    def other_first(story: Story, cmd: ControlCommand) -> None:
        cs.resolve(story, c.case, "fail", "cmd-someone-else", by="operator:other")

    c.scheduler(c.held, other_first).join(0)
    reply = decide(c, c.case, decision="retry", reason="the provider says not sent")
    assert (reply.status_code, reply.json()["error"]["code"]) == (409, "already_decided")
    assert "operator:other" in reply.json()["error"]["message"]

    def refuse(story: Story, cmd: ControlCommand) -> None:
        cs.refuse(story, c.approval_case, "approve", cmd.command_id, "the payload changed")

    c.scheduler(c.approval, refuse)
    ref, key = "sha256:" + "3" * 64, cs.key_of(c.approval, "refund")
    body = {"reason": "ok by finance", "input_ref": ref, "idempotency_key": key}
    reply = c.client.post(f"/v1/approvals/{c.approval_case}/approve", headers=ACME, json=body)
    assert (reply.status_code, reply.json()["error"]["code"]) == (409, "decision_refused")
    assert "the payload changed" in reply.json()["error"]["message"]
    [cmd] = [x for _, x in c.commands(expect=2) if x.run_id == c.approval.run_id]
    assert (cmd.issued_by, json.loads(cmd.args_json or "")) == (
        "key:acme-dev",
        {
            "case_id": c.approval_case,
            "decision": "approve",
            "bound_to": {"input_ref": ref, "idempotency_key": key},
        },
    )


def test_an_approval_names_the_payload_it_approves_and_only_its_tenant_or_an_operator_may(cases, monkeypatch):
    c = cases
    c.client.app.state.deps.api.decision_wait_s = 0.5  # nobody answers: pending
    ref, key = "sha256:" + "3" * 64, cs.key_of(c.approval, "refund")
    other = {"reason": "ok", "input_ref": "sha256:" + "4" * 64, "idempotency_key": key}
    reply = c.client.post(f"/v1/approvals/{c.approval_case}/approve", headers=ACME, json=other)
    assert (reply.status_code, reply.json()["error"]["code"]) == (409, "payload_mismatch")
    body = {"reason": "ok", "input_ref": ref, "idempotency_key": key}
    assert (
        c.client.post(f"/v1/approvals/{c.approval_case}/approve", headers=GLOBEX, json=body).status_code
        == 404
    )
    assert c.client.post(f"/v1/approvals/{c.case}/approve", headers=ACME, json=body).status_code == 404
    pending = c.client.post(f"/v1/approvals/{c.approval_case}/deny", headers=OPERATOR, json={"reason": "no"})
    assert pending.status_code == 202 and pending.json()["status"] == "pending"
    [(_, cmd)] = c.commands(expect=1)
    assert (cmd.command_id, cmd.issued_by, json.loads(cmd.args_json or "")["decision"]) == (
        pending.json()["command_id"], OPERATOR_ID, "deny",
    )  # fmt: skip


def test_cancel_pause_and_resume_go_to_the_run_for_its_tenant_or_an_operator_only(cases):
    c = cases
    run = c.held.run_id
    for action in ("cancel", "pause", "resume"):
        denied = c.client.post(f"/v1/runs/{run}/{action}", headers=GLOBEX, json={"reason": "mine now"})
        assert (denied.status_code, denied.json()["error"]["code"]) == (404, "run_not_found")
    assert c.client.post(f"/v1/runs/{run}/pause", headers=ACME, json={}).status_code == 422
    paused = c.client.post(f"/v1/runs/{run}/pause", headers=ACME, json={"reason": "maintenance"})
    assert paused.status_code == 202, paused.text
    canceled = c.client.post(f"/v1/runs/{run}/cancel", headers=OPERATOR, json={"reason": "runaway"})
    assert canceled.status_code == 202
    ended = c.client.post(f"/v1/runs/{c.api.acme_runs[0]}/cancel", headers=ACME, json={"reason": "late"})
    assert (ended.status_code, ended.json()["error"]["code"]) == (409, "run_ended")
    sent = c.commands(expect=2)
    assert [(k, x.action, x.issued_by, x.reason, x.tenant_id) for k, x in sent] == [
        (run, "pause", "key:acme-dev", "maintenance", "acme"),
        (run, "cancel", OPERATOR_ID, "runaway", "acme"),
    ]
    assert [x.command_id for _, x in sent] == [paused.json()["command_id"], canceled.json()["command_id"]]


def test_a_nul_or_impossible_id_in_a_path_is_404_not_a_database_error(cases):
    c = cases
    for method, path, headers in (
        ("GET", "/v1/quarantine/a%00b", ACME),
        ("POST", "/v1/quarantine/a%00b/decide", OPERATOR),
        ("POST", "/v1/approvals/a%00b/deny", ACME),
        ("GET", "/v1/quarantine/" + "x" * 1200, OPERATOR),
    ):
        body = {"decision": "retry", "reason": "x"} if "decide" in path else {"reason": "x"}
        reply = c.client.request(method, path, headers=headers, json=body if method == "POST" else None)
        assert (reply.status_code, reply.json()["error"]["code"]) == (404, "case_not_found"), path
    for action in ("cancel", "pause"):
        reply = c.client.post(f"/v1/runs/a%00b/{action}", headers=OPERATOR, json={"reason": "x"})
        assert (reply.status_code, reply.json()["error"]["code"]) == (404, "run_not_found")


def test_two_concurrent_decisions_on_one_case_one_applies_the_other_is_a_409(cases):
    c = cases
    answered: list[str] = []

    def first_wins(story: Story, _: ControlCommand) -> None:
        # The run's one scheduler takes its commands in log order: the first applies, the second is
        # refused (both are on the run's one partition).
        first, second = [x for _, x in c.commands() if x.run_id == story.run_id]
        args = json.loads(first.args_json or "{}")
        cs.resolve(story, c.case, args["decision"], first.command_id, by=first.issued_by or "")
        cs.refuse(story, c.case, json.loads(second.args_json or "{}")["decision"], second.command_id,
                  f"case {c.case} is decided already")  # fmt: skip
        c.api.project(story.events[-2:-1])
        answered.append(first.command_id)

    c.scheduler(c.held, first_wins, nth=2)
    replies: dict[str, object] = {}

    def ask(decision: str) -> None:
        replies[decision] = decide(c, c.case, decision=decision, reason=f"{decision} it")

    threads = [threading.Thread(target=ask, args=(d,)) for d in ("retry", "fail")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    codes = sorted(
        (r.status_code, None if r.status_code == 200 else r.json()["error"]["code"])  # type: ignore[attr-defined]
        for r in replies.values()
    )
    # The loser learns it lost: from the case decided by the other, or from its own refusal.
    assert codes[0] == (200, None) and codes[1] in ((409, "already_decided"), (409, "decision_refused"))
    [won] = [r.json() for r in replies.values() if r.status_code == 200]  # type: ignore[attr-defined]
    assert won["decision_command_id"] == answered[0]
