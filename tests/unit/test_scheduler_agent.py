"""The agent step in the scheduler's pure core: turns, tool calls, refusals, limits, keys, retries."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from keel import events as ev
from keel.contracts import (
    CommitDetail,
    ModelDetail,
    RunEvent,
    RunRequested,
    StepCommand,
    StepDetail,
    ToolDetail,
)
from keel.idempotency import agent_call_key
from keel.tooldefs import ToolDefinition, parse_definition
from keel.workflows import Catalog, WorkflowSpec, parse_workflow
from services.scheduler.core import Decision, decide, due
from services.scheduler.state import RunState

RUN = "run-a1"
T0 = 1_800_000_000_000

LOOKUP = {
    "name": "lookup_customer",
    "version": 1,
    "description": "Find a customer by email.",
    "provider": "helpdesk",
    "base_url": "http://127.0.0.1:1",
    "side_effects": False,
    "input_schema": {
        "type": "object",
        "required": ["customer_email"],
        "properties": {"customer_email": {"type": "string"}},
        "additionalProperties": False,
    },
    "output_schema": {
        "type": "object",
        "required": ["customer_id"],
        "properties": {"customer_id": {"type": "string"}},
    },
    "external_id": "customer_id",
    "request": {"method": "GET", "path": "/v1/customers", "body": "none"},
    "idempotency": {"mode": "none"},
}
REFUND = {
    "name": "issue_refund",
    "version": 1,
    "description": "Refund a charge.",
    "provider": "helpdesk",
    "base_url": "http://127.0.0.1:1",
    "side_effects": True,
    "input_schema": {
        "type": "object",
        "required": ["charge_id", "amount_cents"],
        "properties": {"charge_id": {"type": "string"}, "amount_cents": {"type": "integer", "minimum": 1}},
        "additionalProperties": False,
    },
    "output_schema": {
        "type": "object",
        "required": ["refund_id"],
        "properties": {"refund_id": {"type": "string"}},
    },
    "external_id": "refund_id",
    "request": {"method": "POST", "path": "/v1/refunds"},
    "idempotency": {"mode": "none"},
}
TOOLS: dict[str, ToolDefinition] = {
    "lookup_customer@1": parse_definition(LOOKUP),
    "issue_refund@1": parse_definition(REFUND),
}


def tools(ref: str) -> ToolDefinition:
    if ref not in TOOLS:
        raise LookupError(f"unknown tool {ref}")
    return TOOLS[ref]


def workflow(**agent: Any) -> WorkflowSpec:
    step = {
        "name": "triage",
        "kind": "agent",
        "agent": "triage_v1",
        "model": "sim-small",
        "system": "You are a support agent.",
        "prompt": "Ticket from {{ input.email }}",
        "tools": ["lookup_customer@1", "issue_refund@1"],
        "timeout_ms": 1000,
        "retry": {"max_attempts": 3, "initial_backoff_ms": 100, "max_backoff_ms": 200},
        **agent,
    }
    after = {"name": "after", "kind": "tool", "tool": "issue_refund@1", "needs": ["triage"], "input": {}}
    return parse_workflow(
        {"name": "support", "version": 1, "input": {"email": "string"}, "steps": [step, after]}
    )


class Run:
    """Drives one run through `decide` and `due`, keeping the state like the shell does."""

    def __init__(self, spec: WorkflowSpec, modes: dict[str, str] | None = None) -> None:
        self.spec, self.now = spec, T0
        self.catalog = Catalog({(spec.name, spec.version): spec})
        self.modes = modes or {}
        request = RunRequested(
            request_id="r",
            run_id=RUN,
            tenant_id="acme",
            workflow=spec.name,
            input_json=json.dumps({"email": "ada@example.com"}),
            requested_at=datetime.now(UTC),
        )
        self.state: RunState | None = None
        self.out = self._apply(decide(None, request, 0, self.now, self.catalog, tools=tools))

    def _apply(self, decision: Decision) -> list[Any]:
        self.state = decision.state
        return decision.outputs

    def send(self, fact: RunEvent) -> list[Any]:
        assert self.state is not None
        copy = self.state.copy()
        return self._apply(decide(copy, fact, 0, self.now, self.catalog, tools=tools))

    def tick(self, ms: int) -> list[Any]:
        assert self.state is not None
        self.now += ms
        decision = due(self.state.copy(), self.now, self.catalog, lambda t: self.modes.get(t), tools=tools)
        return self._apply(decision)


def commands(outputs: list[Any]) -> list[StepCommand]:
    return [o for o in outputs if isinstance(o, StepCommand)]


def events(outputs: list[Any], kind: str | None = None) -> list[RunEvent]:
    return [o for o in outputs if isinstance(o, RunEvent) and (kind is None or o.event == kind)]


def call(name: str, args: Any, call_id: str = "c1") -> dict[str, Any]:
    arguments = args if isinstance(args, str) else json.dumps(args)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def turn(cmd: StepCommand, *calls: dict[str, Any], content: str | None = None) -> RunEvent:
    """The executor's model_called for the turn command `cmd`."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = list(calls)
    return ev.step_fact(
        cmd,
        ev.MODEL_CALLED,
        T0,
        "executor",
        model="sim-small",
        cost_usd_est=0.001,
        output_json=json.dumps(message),
        model_call=ModelDetail(provider="sim", prompt_tokens=10, completion_tokens=5),
    )


def committed(cmd: StepCommand, output: Any, duplicate: bool = False) -> RunEvent:
    """The ledger's step_committed for a tool call command."""
    return ev.step_fact(
        cmd,
        ev.STEP_COMMITTED,
        T0,
        "ledger",
        output_json=json.dumps(output),
        commit=CommitDetail(external_id="x1", committed_at=datetime.now(UTC), duplicate=duplicate),
    )


def tool_failed(cmd: StepCommand, failure_class: str, mode: str = "none", **detail: Any) -> RunEvent:
    return ev.step_fact(
        cmd,
        ev.TOOL_FAILED,
        T0,
        "adapters",
        error="boom",
        tool=ToolDetail(tool="issue_refund@1", idempotency_mode=mode, failure_class=failure_class, **detail),
    )


def payload(cmd: StepCommand) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(cmd.input_json)
    return data


def test_a_turn_is_issued_with_the_conversation_and_the_tools_as_openai_functions():
    run = Run(workflow())
    (cmd,) = commands(run.out)
    assert (cmd.kind, cmd.call, cmd.agent_id, cmd.attempt) == ("agent", "turn-1", "triage_v1", 1)
    request = payload(cmd)
    assert request["messages"] == [
        {"role": "system", "content": "You are a support agent."},
        {"role": "user", "content": "Ticket from ada@example.com"},
    ]
    names = [t["function"]["name"] for t in request["tools"]]
    assert names == ["lookup_customer", "issue_refund"]
    assert request["tools"][0]["function"]["parameters"] == LOOKUP["input_schema"]
    assert cmd.deadline is not None and cmd.command_id == f"{RUN}/triage/turn-1/1"


def test_the_loop_runs_turns_and_calls_to_a_final_answer_that_commits_the_step():
    run = Run(workflow())
    (t1,) = commands(run.out)
    out = run.send(turn(t1, call("lookup_customer", {"customer_email": "ada@example.com"})))
    (lookup,) = commands(out)
    assert (lookup.kind, lookup.call, lookup.agent_id) == ("tool", "turn-1.call-0", "triage_v1")
    args = {"customer_email": "ada@example.com"}
    assert lookup.idempotency_key == agent_call_key(
        "acme", "support", RUN, "triage", "lookup_customer@1", args, side_effects=False, turn=1, index=0
    )
    assert payload(lookup) == {"tool": "lookup_customer@1", "payload": args}
    out = run.send(committed(lookup, {"customer_id": "cus_1", "charge_id": "ch_1"}))
    (t2,) = commands(out)
    assert t2.call == "turn-2"
    messages = payload(t2)["messages"]
    assert messages[-2]["tool_calls"][0]["function"]["name"] == "lookup_customer"
    assert messages[-1] == {
        "role": "tool",
        "tool_call_id": "c1",
        "content": '{"charge_id":"ch_1","customer_id":"cus_1"}',
    }
    out = run.send(turn(t2, content="All done."))
    (done,) = events(out, ev.STEP_COMMITTED)
    assert json.loads(done.output_json or "") == {"text": "All done."} and done.agent_id == "triage_v1"
    assert run.state is not None and run.state.steps["triage"].status == "committed"
    (after,) = commands(out)  # the next step of the graph starts on the agent's answer
    assert after.step == "after"


def test_a_repeated_model_called_or_one_of_an_older_turn_changes_nothing():
    run = Run(workflow())
    (t1,) = commands(run.out)
    first = turn(t1, call("lookup_customer", {"customer_email": "a@b.co"}))
    assert commands(run.send(first))
    assert run.send(first) == []


def test_parallel_calls_of_one_turn_are_joined_before_the_next_turn():
    run = Run(workflow())
    (t1,) = commands(run.out)
    out = run.send(
        turn(
            t1,
            call("lookup_customer", {"customer_email": "a@b.co"}, "c1"),
            call("issue_refund", {"charge_id": "ch_1", "amount_cents": 100}, "c2"),
        )
    )
    a, b = commands(out)
    assert (a.call, b.call) == ("turn-1.call-0", "turn-1.call-1")
    assert run.send(committed(b, {"refund_id": "re_1"})) == []  # one of two: no turn yet
    (t2,) = commands(run.send(committed(a, {"customer_id": "cus_1"})))
    tool_messages = [m for m in payload(t2)["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_messages] == ["c1", "c2"]  # in the order the model asked


def test_the_same_write_asked_again_in_a_later_turn_has_the_same_key():
    run = Run(workflow())
    (t1,) = commands(run.out)
    refund = {"charge_id": "ch_1", "amount_cents": 100}
    (first,) = commands(run.send(turn(t1, call("issue_refund", refund))))
    (t2,) = commands(run.send(committed(first, {"refund_id": "re_1"})))
    (again,) = commands(run.send(turn(t2, call("issue_refund", dict(reversed(refund.items())), "c9"))))
    assert again.call == "turn-2.call-0" and again.idempotency_key == first.idempotency_key
    assert "turn" not in (first.idempotency_key or "").split("|")[-2]


def test_the_same_write_twice_in_one_turn_is_one_call_and_both_get_its_result():
    run = Run(workflow())
    (t1,) = commands(run.out)
    refund = {"charge_id": "ch_1", "amount_cents": 100}
    out = run.send(turn(t1, call("issue_refund", refund, "c1"), call("issue_refund", refund, "c2")))
    (only,) = commands(out)
    (t2,) = commands(run.send(committed(only, {"refund_id": "re_1"})))
    tool_messages = [m for m in payload(t2)["messages"] if m["role"] == "tool"]
    assert [(m["tool_call_id"], m["content"]) for m in tool_messages] == [
        ("c1", '{"refund_id":"re_1"}'),
        ("c2", '{"refund_id":"re_1"}'),
    ]


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        (call("delete_all_customers", {}), "is not one of this agent's tools"),
        (call("issue_refund", '{"charge_id": "ch_1", '), "not valid JSON"),
        (call("issue_refund", {"charge_id": "ch_1", "amount_cents": "ten"}), "$.amount_cents"),
        (call("issue_refund", {"charge_id": "ch_1"}), "'amount_cents' is a required property"),
    ],
)
def test_a_bad_call_is_refused_never_sent_and_the_model_hears_why(bad: dict[str, Any], why: str):
    run = Run(workflow())
    (t1,) = commands(run.out)
    out = run.send(turn(t1, bad))
    (refused,) = events(out, "tool_call_refused")
    assert why in (refused.error or "") and refused.call == "turn-1.call-0"
    assert refused.step_detail is not None and refused.step_detail.failure_class == "validation"
    cmds = commands(out)
    assert [c.kind for c in cmds] == ["agent"]  # no tool command: the next turn at once
    told = payload(cmds[0])["messages"][-1]
    assert told["role"] == "tool" and why in json.loads(told["content"])["error"]


def test_past_max_violations_the_step_is_quarantined_with_the_evidence():
    run = Run(workflow(max_violations=1))
    (t1,) = commands(run.out)
    (t2,) = commands(run.send(turn(t1, call("nope", {}))))
    out = run.send(turn(t2, call("nope_again", {})))
    (held,) = events(out, ev.QUARANTINED)
    assert held.quarantine is not None and held.quarantine.failure_class == "validation"
    evidence = json.loads(held.output_json or "")
    assert len(evidence["violations"]) == 2 and "nope_again" in evidence["violations"][1]
    assert commands(out) == [] and run.state is not None and run.state.status == "quarantined"


def test_max_turns_hard_stops_the_run_with_failure_class_budget_and_the_last_calls():
    run = Run(workflow(max_turns=2))
    (t1,) = commands(run.out)
    loop = call("lookup_customer", {"customer_email": "a@b.co"})
    (c1,) = commands(run.send(turn(t1, loop)))
    (t2,) = commands(run.send(committed(c1, {"customer_id": "cus_1"})))
    (c2,) = commands(run.send(turn(t2, loop)))
    assert c2.idempotency_key != c1.idempotency_key  # a read: each turn's call is its own
    out = run.send(committed(c2, {"customer_id": "cus_1"}))
    assert commands(out) == []  # turn 3 is never asked
    (failed,) = events(out, ev.FAILED)
    assert failed.step_detail is not None and failed.step_detail.failure_class == "budget"
    assert "max_turns 2" in (failed.error or "")
    evidence = json.loads(failed.output_json or "")
    assert evidence["turns"] == 2 and [c["tool"] for c in evidence["last_calls"]] == ["lookup_customer@1"] * 2
    assert evidence["last_calls"][-1]["key"] == c2.idempotency_key


def test_a_lost_turn_is_retried_with_the_same_request_and_a_late_answer_still_counts():
    run = Run(workflow())
    (t1,) = commands(run.out)
    out = run.tick(1_001)  # its deadline passed without a model_called
    (retry,) = events(out, ev.RETRY_SCHEDULED)
    assert retry.call == "turn-1" and retry.retry is not None and retry.retry.failure_class == "transient"
    (t1b,) = commands(run.tick(1_000))
    assert (t1b.call, t1b.attempt, t1b.input_json) == ("turn-1", 2, t1.input_json)
    # attempt 1's answer arrives late: it is the turn's commit; attempt 2's later answer changes nothing
    assert commands(run.send(turn(t1, call("lookup_customer", {"customer_email": "a@b.co"}))))
    assert run.send(turn(t1b, content="late")) == []


def test_a_failed_model_call_is_retried_like_an_llm_step():
    run = Run(workflow())
    (t1,) = commands(run.out)
    failed = ev.step_fact(
        t1,
        ev.STEP_FAILED,
        T0,
        "executor",
        error="503",
        step_detail=StepDetail(kind="agent", failure_class="transient"),
    )
    (retry,) = events(run.send(failed), ev.RETRY_SCHEDULED)
    assert retry.call == "turn-1" and retry.retry is not None and retry.retry.next_attempt == 2


def test_a_tool_call_follows_the_tool_steps_rules_unknown_outcome_of_a_none_tool_is_quarantined():
    run = Run(workflow())
    (t1,) = commands(run.out)
    (refund,) = commands(run.send(turn(t1, call("issue_refund", {"charge_id": "ch_1", "amount_cents": 5}))))
    out = run.send(tool_failed(refund, "unknown_outcome", mode="none"))
    (held,) = events(out, ev.QUARANTINED)
    assert held.call == "turn-1.call-0" and held.idempotency_key == refund.idempotency_key
    assert held.quarantine is not None and held.quarantine.case_id == f"{RUN}:triage:turn-1.call-0:1"


def test_a_call_the_adapters_refuse_for_want_of_an_approval_fails_the_run_never_retried():
    # A tool whose definition requires approval is called only with a grant, and an agent's call has
    # none (approvals are asked for tool steps): the adapters refuse it as auth, nothing is sent.
    run = Run(workflow())
    (t1,) = commands(run.out)
    (refund,) = commands(run.send(turn(t1, call("issue_refund", {"charge_id": "ch_1", "amount_cents": 5}))))
    why = "requires approval, and no approval is bound to this call: not sent"  # the adapters' words
    out = run.send(replace(tool_failed(refund, "auth", mode="lookup"), error=why))
    (failed,) = events(out, ev.FAILED)
    assert why in (failed.run.reason or "") and not commands(out) and not events(out, ev.RETRY_SCHEDULED)


def test_a_tool_call_under_a_safe_mode_is_retried_with_the_same_key_after_a_timeout():
    run = Run(workflow(), modes={"issue_refund@1": "lookup"})
    (t1,) = commands(run.out)
    (refund,) = commands(run.send(turn(t1, call("issue_refund", {"charge_id": "ch_1", "amount_cents": 5}))))
    (retry,) = events(run.tick(1_001), ev.RETRY_SCHEDULED)
    assert retry.call == "turn-1.call-0" and retry.retry is not None
    assert retry.retry.failure_class == "unknown_outcome"
    (again,) = commands(run.tick(60_000))
    assert (again.call, again.attempt, again.idempotency_key) == ("turn-1.call-0", 2, refund.idempotency_key)


def test_a_contract_breaking_answer_of_a_provider_quarantines_the_step_and_nothing_runs_on_it():
    run = Run(workflow())
    (t1,) = commands(run.out)
    (refund,) = commands(run.send(turn(t1, call("issue_refund", {"charge_id": "ch_1", "amount_cents": 5}))))
    drift = tool_failed(refund, "validation", mode="lookup", effect_accepted=True)
    out = run.send(drift)
    assert [e.event for e in events(out)] == [ev.QUARANTINED] and commands(out) == []
    assert run.state is not None and run.state.steps["after"].status == "pending"


SCHEMA = {
    "type": "object",
    "required": ["status", "refund_id"],
    "properties": {"status": {"type": "string"}, "refund_id": {"type": "string"}},
}


def test_an_answer_breaking_the_output_schema_is_refused_and_the_model_asked_again():
    run = Run(workflow(output_schema=SCHEMA))
    (t1,) = commands(run.out)
    assert payload(t1)["response_format"] == SCHEMA
    out = run.send(turn(t1, content='{"status": "resolved", "refund_id": null}'))
    (refused,) = events(out, "answer_refused")
    assert "$.refund_id" in (refused.error or "") and refused.call == "turn-1"
    (t2,) = commands(out)
    assert payload(t2)["messages"][-1]["role"] == "user"
    out = run.send(turn(t2, content='{"status": "resolved", "refund_id": "re_1"}'))
    (done,) = events(out, ev.STEP_COMMITTED)
    assert json.loads(done.output_json or "") == {"status": "resolved", "refund_id": "re_1"}


def test_an_unknown_tool_in_the_definition_fails_the_run_before_any_call():
    run = Run(workflow(tools=["lookup_customer@1", "missing@1"]))
    (failed,) = events(run.out, ev.FAILED)
    assert "missing@1" in (failed.error or "") and commands(run.out) == []


def test_the_agent_state_survives_the_changelog_and_a_copy_is_independent():
    run = Run(workflow())
    (t1,) = commands(run.out)
    run.send(turn(t1, call("lookup_customer", {"customer_email": "a@b.co"})))
    assert run.state is not None
    restored = RunState.from_json(run.state.to_json())
    assert restored == run.state and restored.steps["triage"].agent is not None
    copy = run.state.copy()
    agent = copy.steps["triage"].agent
    assert agent is not None
    agent.messages.append({"role": "user", "content": "x"})
    agent.calls["turn-1.call-0"].status = "committed"
    original = run.state.steps["triage"].agent
    assert original is not None and original.calls["turn-1.call-0"].status == "dispatched"
    assert len(original.messages) == len(agent.messages) - 1


def llm_workflow(output_schema: dict[str, Any] | None) -> WorkflowSpec:
    step: dict[str, Any] = {
        "name": "draft",
        "kind": "llm",
        "model": "sim-small",
        "prompt": "Hi {{ input.email }}",
    }
    if output_schema is not None:
        step["output_schema"] = output_schema
    return parse_workflow({"name": "support", "version": 1, "input": {"email": "string"}, "steps": [step]})


@pytest.mark.parametrize(("schema", "held"), [(SCHEMA, True), (None, False)])
def test_an_llm_answer_breaking_its_output_schema_after_the_reask_is_quarantined(
    schema: dict[str, Any] | None, held: bool
):
    run = Run(llm_workflow(schema))
    (cmd,) = commands(run.out)
    if schema is not None:
        sent = payload(cmd)
        assert sent["output_schema"] == schema and sent["response_format"] == "json"
    bad = ev.step_fact(
        cmd,
        ev.STEP_FAILED,
        T0,
        "executor",
        error="$.refund_id: None is not of type 'string'",
        output_json='{"refund_id": null}',
        step_detail=StepDetail(kind="llm", failure_class="validation"),
    )
    out = run.send(bad)
    kinds = [e.event for e in events(out)]
    assert kinds == ([ev.QUARANTINED] if held else [ev.FAILED])
    if held:
        assert "$.refund_id" in (events(out)[0].quarantine.reason if events(out)[0].quarantine else "")
        assert events(out)[0].output_json == '{"refund_id": null}'


def test_a_read_call_whose_outcome_is_unknown_is_read_again_never_quarantined():
    run = Run(workflow())  # lookup_customer@1: side_effects false, mode none
    (t1,) = commands(run.out)
    (lookup,) = commands(run.send(turn(t1, call("lookup_customer", {"customer_email": "a@b.co"}))))
    (retry,) = events(run.send(tool_failed(lookup, "unknown_outcome", mode="none")), ev.RETRY_SCHEDULED)
    assert retry.call == "turn-1.call-0" and retry.retry is not None
    assert retry.retry.failure_class == "transient"
    (again,) = commands(run.tick(60_000))
    assert (again.call, again.attempt) == ("turn-1.call-0", 2)
    # and a read lost with its adapter (no answer at all) is retried too
    (lost,) = events(run.tick(1_001), ev.RETRY_SCHEDULED)
    assert lost.retry is not None and lost.retry.failure_class == "transient"


def test_a_cancel_lets_the_turn_in_flight_settle_then_ends_the_run_without_asking_for_its_calls():
    from keel.contracts import ControlCommand

    run = Run(workflow())
    (t1,) = commands(run.out)
    assert run.state is not None
    cancel = ControlCommand(
        command_id="c",
        run_id=RUN,
        tenant_id="acme",
        action="cancel",
        issued_by="ops",
        reason="stop",
        issued_at=datetime.now(UTC),
    )
    assert run.send(cancel) == [] and run.state.status == "canceling"  # the turn is in flight
    out = run.send(turn(t1, call("issue_refund", {"charge_id": "ch_1", "amount_cents": 5})))
    assert commands(out) == []  # the calls it asked for are never made
    (ended,) = events(out, ev.CANCELED)
    assert "canceled by ops: stop" in (ended.error or "")
