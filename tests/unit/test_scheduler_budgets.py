"""Budgets on the scheduler's side: reserve before a paid attempt, act on the enforcer's answer, turn
cost facts into spends and ended attempts into closes, forget an ended run (docs/budgets.md)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from test_scheduler_agent import RUN, T0, TOOLS, call, commands, events, payload, tools, turn, workflow

from keel import events as ev
from keel.contracts import BudgetCommand, BudgetDetail, RunEvent, RunRequested, StepCommand
from keel.pricing import worst_case_micros
from keel.workflows import Catalog, WorkflowSpec, parse_workflow
from services.scheduler.budgets import BudgetPolicy
from services.scheduler.core import Decision, decide, due
from services.scheduler.state import RunState

POLICY = BudgetPolicy(max_wait_ms=10_000)


class Run:
    def __init__(self, spec: WorkflowSpec, budget_usd: float | None = None) -> None:
        self.spec, self.now = spec, T0
        self.catalog = Catalog({(spec.name, spec.version): spec})
        request = RunRequested(
            request_id="r",
            run_id=RUN,
            tenant_id="acme",
            workflow=spec.name,
            input_json=json.dumps({"email": "ada@example.com"}),
            requested_at=datetime.now(UTC),
            budget_usd=budget_usd,
        )
        self.state: RunState | None = None
        self.out = self._apply(
            decide(None, request, 0, self.now, self.catalog, tools=tools, budget_policy=POLICY)
        )

    def _apply(self, decision: Decision) -> list[Any]:
        self.state = decision.state
        return decision.outputs

    def send(self, fact: RunEvent) -> list[Any]:
        assert self.state is not None
        decision = decide(
            self.state.copy(), fact, 0, self.now, self.catalog, tools=tools, budget_policy=POLICY
        )
        return self._apply(decision)

    def tick(self, ms: int) -> list[Any]:
        assert self.state is not None
        self.now += ms
        decision = due(
            self.state.copy(), self.now, self.catalog, lambda t: None, tools=tools, budget_policy=POLICY
        )
        return self._apply(decision)


def budget(outputs: list[Any], action: str | None = None) -> list[BudgetCommand]:
    return [o for o in outputs if isinstance(o, BudgetCommand) and (action is None or o.action == action)]


def reply(cmd: BudgetCommand, kind: str, **detail: Any) -> RunEvent:
    fields: dict[str, Any] = {"scope": "run", "limit_usd": 1.0, "spent_usd": 0.0, **detail}
    return RunEvent(
        event_id=f"{cmd.command_id}:{kind}",
        run_id=cmd.run_id,
        tenant_id=cmd.tenant_id,
        workflow=cmd.workflow,
        workflow_version=cmd.workflow_version,
        step=cmd.step,
        call=cmd.call,
        attempt=cmd.attempt,
        event=kind,
        ts=datetime.now(UTC),
        source="budget",
        budget=BudgetDetail(reservation_id=cmd.reservation_id, **fields),
    )


def llm_spec(budget_usd: float | None = None, step_budget: float | None = None) -> WorkflowSpec:
    step: dict[str, Any] = {
        "name": "draft",
        "kind": "llm",
        "model": "sim-small",
        "prompt": "Hi {{ input.email }}",
    }
    if step_budget is not None:
        step["budget_usd"] = step_budget
    doc: dict[str, Any] = {"name": "support", "version": 1, "input": {"email": "string"}, "steps": [step]}
    if budget_usd is not None:
        doc["budget_usd"] = budget_usd
    return parse_workflow(doc)


def test_a_paid_attempt_reserves_its_worst_case_before_any_command():
    run = Run(llm_spec(budget_usd=0.5, step_budget=0.2), budget_usd=0.3)
    assert commands(run.out) == []
    (reserve,) = budget(run.out)
    prompt = len(b"Hi ada@example.com")
    assert reserve.action == "reserve" and reserve.tenant_id == "acme"
    assert reserve.amount_micros == worst_case_micros("sim-small", prompt, 1024) > 0
    assert reserve.reservation_id == f"{RUN}/draft/1" and reserve.attempt == 1
    assert reserve.run_limit_micros == 300_000  # the request lowered the workflow's 0.5
    assert reserve.step_limit_micros == 200_000
    assert run.state is not None and run.state.steps["draft"].status == "reserving"
    (cmd,) = commands(run.send(reply(reserve, "budget_reserved")))
    assert cmd.step == "draft" and cmd.attempt == 1


def test_a_request_can_lower_the_run_limit_never_raise_it():
    run = Run(llm_spec(budget_usd=0.5), budget_usd=9.0)
    assert budget(run.out)[0].run_limit_micros == 500_000


def test_a_deferred_reservation_asks_again_on_a_timer_and_gives_up_past_the_max_wait():
    run = Run(llm_spec())
    (first,) = budget(run.out)
    assert run.send(reply(first, "budget_deferred", retry_after_ms=500)) == []
    assert run.tick(499) == []
    (again,) = budget(run.tick(1), "reserve")
    assert again.reservation_id == first.reservation_id and again.command_id != first.command_id
    run.send(reply(again, "budget_deferred", retry_after_ms=20_000))
    out = run.tick(20_000)
    (failed,) = events(out, ev.FAILED)
    assert failed.step_detail is not None and failed.step_detail.failure_class == "budget"
    assert "no budget freed up" in (failed.error or "")
    assert budget(out, "forget")  # the ended run gives its scopes back


def test_budget_exceeded_hard_stops_the_run_with_the_figures():
    run = Run(llm_spec(budget_usd=0.01))
    (reserve,) = budget(run.out)
    out = run.send(reply(reserve, "budget_exceeded", limit_usd=0.01, spent_usd=0.0099, requested_usd=0.0005))
    (failed,) = events(out, ev.FAILED)
    assert failed.step_detail is not None and failed.step_detail.failure_class == "budget"
    assert "run limit $0.010000" in (failed.error or "") and failed.budget is not None
    assert commands(out) == [] and [b.action for b in budget(out)] == ["forget"]


def test_a_grant_for_an_attempt_no_longer_waiting_is_given_straight_back():
    run = Run(llm_spec())
    (reserve,) = budget(run.out)
    run.send(reply(reserve, "budget_reserved"))
    out = run.send(reply(reserve, "budget_reserved"))  # a repeat
    assert commands(out) == [] and [b.action for b in budget(out)] == ["close"]


def test_cost_facts_are_spent_and_ended_attempts_closed():
    run = Run(llm_spec())
    (reserve,) = budget(run.out)
    (cmd,) = commands(run.send(reply(reserve, "budget_reserved")))
    called = ev.step_fact(cmd, ev.MODEL_CALLED, T0, "executor", cost_usd_est=0.000123, cost_micros=123)
    (spend,) = budget(run.send(called))
    assert (spend.action, spend.amount_micros, spend.reservation_id) == ("spend", 123, f"{RUN}/draft/1")
    done = ev.step_fact(cmd, ev.STEP_COMMITTED, T0, "executor", output_json='{"text": "x"}')
    out = run.send(done)
    assert [b.action for b in budget(out)] == ["close", "forget"]  # the run completed too


def test_a_lost_attempt_closes_its_reservation():
    run = Run(llm_spec())
    (reserve,) = budget(run.out)
    run.send(reply(reserve, "budget_reserved"))
    out = run.tick(60_001)
    assert [b.action for b in budget(out)] == ["close"] and events(out, ev.RETRY_SCHEDULED)


def test_an_agent_turn_and_a_paid_tool_call_each_reserve():
    TOOLS["issue_refund@1"] = TOOLS["issue_refund@1"].model_copy(update={"fee_usd": 0.01})
    try:
        run = Run(workflow())
        (turn_reserve,) = budget(run.out)
        assert turn_reserve.call == "turn-1" and turn_reserve.amount_micros > 0
        (t1,) = commands(run.send(reply(turn_reserve, "budget_reserved")))
        out = run.send(turn(t1, call("issue_refund", {"charge_id": "ch_1", "amount_cents": 5})))
        actions = [(b.action, b.call) for b in budget(out)]
        assert actions == [("close", "turn-1"), ("reserve", "turn-1.call-0")]
        assert budget(out, "reserve")[0].amount_micros == 10_000 and commands(out) == []
        (refund,) = commands(run.send(reply(budget(out, "reserve")[0], "budget_reserved")))
        assert refund.call == "turn-1.call-0" and refund.kind == "tool"
    finally:
        TOOLS["issue_refund@1"] = TOOLS["issue_refund@1"].model_copy(update={"fee_usd": None})


def test_without_a_policy_nothing_is_reserved():
    catalog = Catalog({("support", 1): llm_spec()})
    request = RunRequested(
        request_id="r",
        run_id=RUN,
        tenant_id="acme",
        workflow="support",
        input_json=json.dumps({"email": "a@b.co"}),
        requested_at=datetime.now(UTC),
    )
    out = decide(None, request, 0, T0, catalog).outputs
    assert [type(o) for o in out if not isinstance(o, RunEvent)] == [StepCommand]


def test_a_repeated_call_past_max_repeats_is_a_loop_hard_stop_before_the_call():
    run = Run(workflow(max_repeats=2))
    loop = call("lookup_customer", {"customer_email": "a@b.co"})

    def granted(out: list[Any]) -> StepCommand:
        (cmd,) = commands(run.send(reply(budget(out, "reserve")[0], "budget_reserved")))
        return cmd

    t1 = granted(run.out)
    (c1,) = commands(run.send(turn(t1, loop)))
    t2 = granted(run.send(ev.step_fact(c1, ev.STEP_COMMITTED, T0, "ledger", output_json="{}")))
    out = run.send(turn(t2, loop))
    (detected,) = events(out, ev.LOOP_DETECTED)
    assert detected.call == "turn-2.call-0" and "called 2 times" in (detected.error or "")
    evidence = json.loads(detected.output_json or "")
    assert [c["call"] for c in evidence["calls"]] == ["turn-1.call-0", "turn-2.call-0"]
    (failed,) = events(out, ev.FAILED)
    assert failed.step_detail is not None and failed.step_detail.failure_class == "budget"
    assert commands(out) == []  # the repeated call is never made
    assert payload(t2)["messages"][-1]["role"] == "tool"


def test_a_reservation_covers_the_dearest_model_the_route_may_reach():
    from keel.routing import RouteConfig

    spec = llm_spec()
    catalog = Catalog({("support", 1): spec})
    request = RunRequested(
        request_id="r",
        run_id=RUN,
        tenant_id="acme",
        workflow="support",
        input_json=json.dumps({"email": "ada@example.com"}),
        requested_at=datetime.now(UTC),
    )
    routes = RouteConfig(fallbacks={"sim-small": ["sim-large"]})
    out = decide(None, request, 0, T0, catalog, budget_policy=POLICY, routes=routes).outputs
    (reserve,) = budget(out)
    prompt = len(b"Hi ada@example.com")
    assert reserve.amount_micros == worst_case_micros("sim-large", prompt, 1024)
    assert reserve.amount_micros > worst_case_micros("sim-small", prompt, 1024)


def test_a_step_with_a_cheaper_route_takes_it_instead_of_stopping_then_stops_if_that_crosses_too():
    spec = parse_workflow(
        {
            "name": "support",
            "version": 1,
            "input": {"email": "string"},
            "steps": [
                {
                    "name": "draft",
                    "kind": "llm",
                    "model": "sim-large",
                    "budget_fallback_model": "sim-small",
                    "prompt": "Hi {{ input.email }}",
                }
            ],
        }
    )
    run = Run(spec)
    (dear,) = budget(run.out)
    out = run.send(reply(dear, "budget_exceeded", limit_usd=0.001, spent_usd=0.0))
    (changed,) = events(out, ev.ROUTE_CHANGED)
    assert changed.model == "sim-small" and "cheaper route" in (changed.error or "")
    (cheap,) = budget(out, "reserve")
    assert cheap.reservation_id == dear.reservation_id and cheap.amount_micros < dear.amount_micros
    assert not events(out, ev.FAILED)
    (cmd,) = commands(run.send(reply(cheap, "budget_reserved")))
    assert payload(cmd)["model"] == "sim-small"
    # Had the cheaper route crossed too, the run would have stopped:
    run2 = Run(spec)
    (dear2,) = budget(run2.out)
    (cheap2,) = budget(run2.send(reply(dear2, "budget_exceeded")), "reserve")
    assert events(run2.send(reply(cheap2, "budget_exceeded")), ev.FAILED)
