"""The chaos verdict, fed fabricated evidence: green on a good run, and each check red on its own break."""

from __future__ import annotations

import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from infra.simulators.dedup import effect_id
from keel.contracts import CommitDetail, LedgerRecord, QuarantineDetail, RunEvent, ToolDetail

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "chaos"))
from verify import Evidence, judge  # noqa: E402 - lives beside the chaos test that uses it

KEY = "acme|outreach|run-1|send|sha256:00"
EFFECT = effect_id("acme", "run-1", "send")
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def e(
    kind: str, step: str | None = None, attempt: int = 0, source: str = "scheduler", **fields: Any
) -> RunEvent:
    return RunEvent(
        event_id=f"run-1:{kind}:{step}:{attempt}",
        run_id="run-1",
        tenant_id="acme",
        workflow="outreach",
        step=step,
        event=kind,
        ts=NOW,
        attempt=attempt,
        source=source,
        idempotency_key=KEY if step else None,
        **fields,
    )


def committed(external_id: str = "msg_1") -> RunEvent:
    return e(
        "step_committed", "send", 1, "ledger", commit=CommitDetail(external_id=external_id, committed_at=NOW)
    )


GOOD_LOG = [
    e("created"),
    e("scheduled"),
    e("started"),
    e("step_started", "send", 1, "executor"),
    e("tool_called", "send", 1, "adapters"),
    e("tool_succeeded", "send", 1, "adapters", tool=ToolDetail(tool="email@1", external_id="msg_1")),
    committed(),
    e("completed"),
]
RECORD = LedgerRecord(
    idempotency_key=KEY,
    tenant_id="acme",
    workflow="outreach",
    run_id="run-1",
    step="send",
    attempt=1,
    external_id="msg_1",
    committed_at=NOW,
)


def stats(by_effect: dict[str, int], without_effect: int = 0) -> dict[str, Any]:
    total = sum(by_effect.values()) + without_effect
    return {"deliveries": total, "by_effect": by_effect, "without_effect": without_effect}


GOOD = Evidence(
    run_ids=["run-1"],
    logs={"run-1": GOOD_LOG},
    ledger=[RECORD],
    provider_stats={"email": stats({EFFECT: 1}), "crm": stats({})},
    side_effects={"outreach": {"send"}},
)


def red(evidence: Evidence) -> set[str]:
    return set(judge(evidence).failures())


def test_a_good_run_is_green_with_its_figures():
    verdict = judge(GOOD)
    assert verdict.failures() == {}
    assert (verdict.deliveries, verdict.committed_effects, verdict.held_deliveries) == (1, 1, 0)
    assert verdict.by_status == {"completed": 1}
    assert "duplicates 0, lost 0, uncommitted deliveries 0" in verdict.figures()


def test_a_duplicate_delivery_is_red_whatever_key_it_came_under():
    verdict = judge(replace(GOOD, provider_stats={"email": stats({EFFECT: 2})}))
    assert verdict.duplicates == {EFFECT: 2}
    assert set(verdict.failures()) == {"duplicates", "unbalanced"}


def test_a_committed_effect_never_delivered_is_lost():
    verdict = judge(replace(GOOD, provider_stats={"email": stats({})}))
    assert verdict.lost == [EFFECT] and set(verdict.failures()) == {"lost", "unbalanced"}


def test_a_delivery_keel_forgot_is_an_uncommitted_delivery():
    failed = [*GOOD_LOG[:5], e("tool_failed", "send", 1, "adapters"), e("failed")]
    verdict = judge(replace(GOOD, logs={"run-1": failed}))
    assert verdict.uncommitted_deliveries == {EFFECT: 1}
    assert set(verdict.failures()) == {"uncommitted_deliveries", "unbalanced"}


def test_a_delivery_held_in_quarantine_balances_the_count():
    held = [
        *GOOD_LOG[:5],
        e("tool_failed", "send", 1, "adapters"),
        e("quarantined", "send", 1, quarantine=QuarantineDetail(case_id="c1", reason="unknown outcome")),
    ]
    verdict = judge(replace(GOOD, logs={"run-1": held}))
    assert verdict.failures() == {} and verdict.held_deliveries == 1 and verdict.committed_effects == 0
    twice = judge(replace(GOOD, logs={"run-1": held}, provider_stats={"email": stats({EFFECT: 2})}))
    assert set(twice.failures()) == {"duplicates"}  # held, yet at most once


def test_a_delivery_naming_no_effect_is_red():
    assert red(replace(GOOD, provider_stats={"email": stats({EFFECT: 1}, without_effect=1)})) == {
        "without_effect",
        "unbalanced",
    }


def test_a_ledger_that_commits_twice_is_red():
    assert red(replace(GOOD, ledger=[RECORD, replace(RECORD, attempt=2)])) == {"ledger_duplicates"}


def test_a_commit_without_its_ledger_record_is_red():
    assert red(replace(GOOD, ledger=[])) == {"committed_without_ledger"}


def test_a_commit_whose_id_differs_from_the_ledger_is_red():
    assert red(replace(GOOD, ledger=[replace(RECORD, external_id="msg_2")])) == {"ledger_id_mismatch"}


def test_an_invalid_lifecycle_is_red():
    verdict = judge(replace(GOOD, logs={"run-1": [*GOOD_LOG[:-1], committed(), GOOD_LOG[-1]]}))
    assert set(verdict.failures()) == {"lifecycle"}
    assert verdict.lifecycle == {"run-1": ["side-effect step send committed 2 times"]}


def test_a_run_that_never_ends_is_stuck():
    verdict = judge(replace(GOOD, logs={"run-1": GOOD_LOG[:-1]}))
    assert verdict.stuck == ["run-1"] and set(verdict.failures()) == {"stuck"}
    # An accepted run with no events at all: stuck, and its delivery belongs to no commit.
    nothing = {"stuck", "lifecycle", "uncommitted_deliveries", "unbalanced"}
    assert red(replace(GOOD, logs={})) == nothing
