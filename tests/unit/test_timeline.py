"""`keel timeline`: a run's facts as the API returns them, formatted; an agent step turn by turn."""

from __future__ import annotations

from typing import Any

from unit.agent_stories import looping, support_triage
from unit.test_projection_core import completed_after_retry

from keel.contracts import RunEvent
from keel_ops.cli_runs import format_timeline
from services.api.queries import _json
from services.projector.core import Position, project

API_COLUMNS = (
    "event_id", "event", "step", "call", "attempt", "ts", "source", "idempotency_key", "external_id",
    "failure_class", "error", "cost_usd", "partition", "offset", "body",
)  # fmt: skip


def as_api(events: list[RunEvent]) -> list[dict[str, Any]]:
    """The events as GET /v1/runs/{id}/events answers them: the projector's rows, shaped by the API."""
    rows = [project(e, Position("keel.run-events", 0, i)).changes[0].values for i, e in enumerate(events)]
    return [_json({"kind": r["event"], **{c: r[c] for c in API_COLUMNS}}) for r in rows]


PLAIN = """\
  +  0.000s  (run)                  created
  +  1.000s  (run)                  scheduled
  +  2.000s  (run)                  started
  +  3.000s  draft_email        #1  step_started
  +  4.000s  draft_email        #1  model_called             $0.002100
  +  5.000s  draft_email        #1  step_committed
  +  6.000s  log_to_crm         #1  step_started      key#1
  +  7.000s  log_to_crm         #1  tool_called       key#1
  +  8.000s  log_to_crm         #1  tool_succeeded    key#1  id=crm-1
  +  9.000s  log_to_crm         #1  step_committed    key#1  id=crm-1
  + 10.000s  send_email         #1  step_started      key#2
  + 11.000s  send_email         #1  tool_called       key#2
  + 12.000s  send_email         #1  tool_failed       key#2  failure=transient  transient: 503 from provider
  + 13.000s  send_email         #1  retry_scheduled          failure=transient  \
transient: 503 from provider  retry #2 in 200 ms: retry
  + 14.000s  send_email         #2  step_started      key#2
  + 15.000s  send_email         #2  tool_called       key#2
  + 16.000s  send_email         #2  tool_succeeded    key#2  id=msg-1
  + 17.000s  send_email         #2  step_committed    key#2  id=msg-1
  + 18.000s  (run)                  completed
  + 19.000s  (run)                  started
"""


def test_a_plain_run_reads_as_it_always_did():
    run = completed_after_retry("run-p")
    text = format_timeline(as_api(run.events))
    lines = text.splitlines()
    expected = PLAIN.splitlines()  # a trailing backslash continues a line
    assert lines[: len(expected)] == expected
    assert lines[len(expected) :] == [
        f"  key#1 = acme|outbound_email|run-p|log_to_crm|sha256:{'0' * 64}",
        f"  key#2 = acme|outbound_email|run-p|send_email|sha256:{'0' * 64}",
    ]


def lines_of(text: str) -> list[str]:
    return [" ".join(line.split()) for line in text.splitlines()]  # column widths aside


def test_an_agent_run_reads_turn_by_turn():
    story = support_triage("run-a")
    lines = lines_of(format_timeline(as_api(story.events)))
    # Each turn opens with a heading, in order, before its facts.
    assert [x for x in lines if x.startswith("-- ")] == [f"-- triage: turn {n} --" for n in (1, 2, 3, 4)]
    assert (
        lines.index("-- triage: turn 2 --")
        < lines.index("+ 9.000s triage turn-2 #1 step_started")
        < lines.index("-- triage: turn 3 --")
    )
    expected = [
        # what the model was asked (by ref), its tokens and cost, what it chose
        "+ 4.000s triage turn-1 #1 model_called 412 in / 38 out tokens $0.000450 asked ask#1 "
        '-> lookup_customer({"email":"ada@example.com"})',
        "+ 13.000s triage turn-2 #2 model_called 520 in / 61 out tokens $0.000610 asked ask#2 "
        '-> issue_refund({"charge_id":"ch_1","amount":2500}), delete_account({"id":"cus_1"})',
        "+ 33.000s triage turn-4 #1 model_called 800 in / 52 out tokens $0.000500 asked ask#4 "
        '-> answer: {"status":"refunded","reply":"Your refund of 25.00 EUR fo...',
        # the tool calls: tool, key, external id, what came back; the ledger's answer to a repeat
        "+ 6.000s triage turn-1.call-0 #1 tool_called key#1 lookup_customer@1",
        "+ 7.000s triage turn-1.call-0 #1 tool_succeeded key#1 lookup_customer@1 id=cus_1 "
        '<- {"customer_id":"cus_1","charges":["ch_1"]}',
        "+ 16.000s triage turn-2.call-0 #1 tool_failed key#2 issue_refund@1 failure=unknown_outcome "
        "unknown_outcome: ReadTimeout",
        "+ 26.000s triage turn-3.call-0 #1 tool_succeeded key#2 issue_refund@1 id=re_1 "
        'already committed: provider not called <- {"refund_id":"re_1"}',
        # why anything was refused or retried
        "+ 17.000s triage turn-2.call-1 tool_call_refused refused: tool 'delete_account' is not one of "
        'this agent\'s tools (lookup_customer, issue_refund, email) asked delete_account({"id":"cus_1"})',
        "+ 11.000s triage turn-2 #1 retry_scheduled failure=transient transient: 503 from sim "
        "retry #2 in 150 ms: the model answered 503",
        "+ 18.000s triage turn-2.call-0 #1 retry_scheduled key#2 failure=unknown_outcome retry #2 in 200 ms: "
        "outcome unknown; the lookup adapter checks before repeating",
        # the step's own commit: the answer
        "+ 34.000s triage step_committed answer: "
        '{"status":"refunded","reply":"Your refund of 25.00 EUR fo...',
        "triage (agent support_triage_v1): 4 turns, 2432 in / 221 out tokens, $0.002380; "
        "4 tool calls, 1 refused",
    ]
    missing = [x for x in expected if x not in lines]
    assert missing == []
    refs = {e.input_ref for e in story.events if e.input_ref}
    assert {x.split(" = ")[1] for x in lines if x.startswith("ask#")} == refs
    keys = {e.idempotency_key for e in story.events if e.idempotency_key}
    assert {x.split(" = ")[1] for x in lines if x.startswith("key#")} == keys and len(keys) == 3


def test_an_agent_run_stopped_at_max_turns_says_which_limit():
    lines = lines_of(format_timeline(as_api(looping("run-l").events)))
    assert (
        "+ 15.000s triage failed failure=budget max_turns 2 reached: turns 2; last calls lookup_customer"
        in lines
    )
    assert (
        "triage (agent support_triage_v1): 2 turns, 800 in / 80 out tokens, $0.001060; "
        "2 tool calls, 0 refused" in lines
    )
