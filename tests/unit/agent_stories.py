"""A synthetic agent run, fact by fact as the services publish it: reused by the projector's core and
integration tests and by the timeline's.

Step `triage` (agent support_triage_v1) takes four turns: a lookup; a refund whose model call fails once
and whose provider call times out once, beside a call to a tool the agent does not have (refused); the
same refund asked again (answered by the ledger) with an email; the final answer.
"""

from __future__ import annotations

import json
from typing import Any

from unit.test_projection_core import T0, Story

from keel import events as ev
from keel.contracts import CommitDetail, ModelDetail, RetryDetail, RunDetail, StepDetail, ToolDetail
from keel.idempotency import agent_call_key, content_ref

AGENT, STEP = "support_triage_v1", "triage"
TOOL_CALL_REFUSED = "tool_call_refused"
ANSWER = {"status": "refunded", "reply": "Your refund of 25.00 EUR for charge ch_1 is on its way."}
TURN_COST = {1: 0.00045, 2: 0.00061, 3: 0.00072, 4: 0.0005}
FAILED_TURN_COST = 0.0001  # the failed model call of turn 2 was billed too


class AgentStory(Story):
    def __init__(self, run_id: str, tenant: str = "acme") -> None:
        super().__init__(run_id, tenant, "support_triage")

    def sub(self, kind: str, call: str, attempt: int = 1, extra: str = "", **f: Any) -> AgentStory:
        self.add(kind, STEP, attempt, extra, call, agent_id=AGENT, **f)
        return self

    def turn(
        self, n: int, message: dict[str, Any], attempt: int = 1, tokens: tuple[int, int] = (400, 40)
    ) -> None:
        call = f"turn-{n}"
        request = {"turn": n, "messages": ["..."]}  # what the scheduler rendered; carried by ref
        self.sub(ev.STEP_STARTED, call, attempt, step_detail=StepDetail(kind="agent"))
        self.sub(
            ev.MODEL_CALLED,
            call,
            attempt,
            model="sim-medium",
            cost_usd_est=TURN_COST[n],
            input_ref=content_ref(request),
            output_json=json.dumps({"role": "assistant", **message}),
            model_call=ModelDetail(
                provider="sim", prompt_tokens=tokens[0], completion_tokens=tokens[1], latency_ms=120 * n
            ),
        )

    def key(self, tool: str, args: dict[str, Any], turn: int, index: int, writes: bool) -> str:
        return agent_call_key(
            self.tenant,
            self.workflow,
            self.run_id,
            STEP,
            tool,
            args,
            side_effects=writes,
            turn=turn,
            index=index,
        )

    def tool_call(
        self,
        call: str,
        tool: str,
        key: str,
        external_id: str,
        output: dict[str, Any],
        attempt: int = 1,
        already: bool = False,
    ) -> None:
        self.sub(ev.STEP_STARTED, call, attempt, idempotency_key=key, step_detail=StepDetail(kind="tool"))
        if not already:
            self.sub(ev.TOOL_CALLED, call, attempt, idempotency_key=key, tool=ToolDetail(tool=tool))
        self.sub(
            ev.TOOL_SUCCEEDED,
            call,
            attempt,
            idempotency_key=key,
            output_json=json.dumps(output),
            tool=ToolDetail(tool=tool, external_id=external_id, already_committed=already),
        )
        self.sub(
            ev.STEP_COMMITTED,
            call,
            attempt,
            idempotency_key=key,
            output_json=json.dumps(output),
            commit=CommitDetail(external_id=external_id, committed_at=T0, duplicate=already),
        )


def tool_calls(*calls: tuple[str, str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "content": None,
        "tool_calls": [
            {"id": cid, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
            for cid, name, args in calls
        ],
    }


def support_triage(run_id: str, tenant: str = "acme") -> AgentStory:
    s = AgentStory(run_id, tenant)
    s.start({"ticket_id": "T-1", "customer_email": "ada@example.com", "text": "refund ch_1 please"})
    lookup, refund, email = {"email": "ada@example.com"}, {"charge_id": "ch_1", "amount": 2500}, {"to": "ada"}

    s.turn(1, tool_calls(("c1", "lookup_customer", lookup)), tokens=(412, 38))
    s.tool_call(
        "turn-1.call-0",
        "lookup_customer@1",
        s.key("lookup_customer@1", lookup, 1, 0, False),
        "cus_1",
        {"customer_id": "cus_1", "charges": ["ch_1"]},
    )

    s.sub(ev.STEP_STARTED, "turn-2", 1, step_detail=StepDetail(kind="agent"))
    s.sub(
        ev.STEP_FAILED,
        "turn-2",
        1,
        model="sim-medium",
        cost_usd_est=FAILED_TURN_COST,
        error="model_unavailable: 503 from sim",
        step_detail=StepDetail(kind="agent", failure_class="transient"),
    )
    s.sub(
        ev.RETRY_SCHEDULED,
        "turn-2",
        1,
        error="transient: 503 from sim",
        retry=RetryDetail(
            failure_class="transient",
            reason="the model answered 503",
            delay_ms=150,
            fire_at=T0,
            next_attempt=2,
        ),
    )
    s.turn(
        2,
        tool_calls(("c2", "issue_refund", refund), ("c3", "delete_account", {"id": "cus_1"})),
        attempt=2,
        tokens=(520, 61),
    )
    refund_key = s.key("issue_refund@1", refund, 2, 0, True)
    s.sub(
        ev.STEP_STARTED, "turn-2.call-0", 1, idempotency_key=refund_key, step_detail=StepDetail(kind="tool")
    )
    s.sub(
        ev.TOOL_CALLED, "turn-2.call-0", 1, idempotency_key=refund_key, tool=ToolDetail(tool="issue_refund@1")
    )
    s.sub(
        ev.TOOL_FAILED,
        "turn-2.call-0",
        1,
        idempotency_key=refund_key,
        error="unknown_outcome: ReadTimeout",
        tool=ToolDetail(tool="issue_refund@1", failure_class="unknown_outcome"),
    )
    s.sub(
        TOOL_CALL_REFUSED,
        "turn-2.call-1",
        0,
        error="tool 'delete_account' is not one of this agent's tools (lookup_customer, issue_refund, email)",
        input_json=json.dumps(tool_calls(("c3", "delete_account", {"id": "cus_1"}))["tool_calls"][0]),
    )
    s.sub(
        ev.RETRY_SCHEDULED,
        "turn-2.call-0",
        1,
        idempotency_key=refund_key,
        retry=RetryDetail(
            failure_class="unknown_outcome",
            reason="outcome unknown; the lookup adapter checks before repeating",
            delay_ms=200,
            fire_at=T0,
            next_attempt=2,
        ),
    )
    s.tool_call("turn-2.call-0", "issue_refund@1", refund_key, "re_1", {"refund_id": "re_1"}, attempt=2)

    s.turn(3, tool_calls(("c4", "issue_refund", refund), ("c5", "email", email)), tokens=(700, 70))
    s.tool_call("turn-3.call-0", "issue_refund@1", refund_key, "re_1", {"refund_id": "re_1"}, already=True)
    s.tool_call("turn-3.call-1", "email@1", s.key("email@1", email, 3, 1, True), "msg_1", {"id": "msg_1"})

    s.turn(4, {"content": json.dumps(ANSWER)}, tokens=(800, 52))
    s.add(
        ev.STEP_COMMITTED,
        STEP,
        0,
        source="scheduler",
        agent_id=AGENT,
        output_json=json.dumps(ANSWER),
        commit=CommitDetail(committed_at=T0),
    )
    s.add(ev.COMPLETED, output_json=json.dumps(ANSWER), run=RunDetail(status="completed"))
    return s


def looping(run_id: str, tenant: str = "acme") -> AgentStory:
    """A model that asks the same lookup every turn until `max_turns` (2) stops the run."""
    s = AgentStory(run_id, tenant)
    s.start({"ticket_id": "T-2"})
    args = {"email": "bob@example.com"}
    for n in (1, 2):
        s.turn(n, tool_calls((f"c{n}", "lookup_customer", args)))
        s.tool_call(
            f"turn-{n}.call-0",
            "lookup_customer@1",
            s.key("lookup_customer@1", args, n, 0, False),
            "cus_2",
            {"customer_id": "cus_2"},
        )
    s.add(
        ev.FAILED,
        STEP,
        0,
        agent_id=AGENT,
        error="max_turns 2 reached: turns 2; last calls lookup_customer",
        step_detail=StepDetail(kind="agent", failure_class="budget"),
        run=RunDetail(status="failed"),
    )
    return s
