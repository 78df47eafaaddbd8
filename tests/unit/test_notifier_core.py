"""The notifier's pure core: which run events notify, the body they send, signing, the retry policy
and the offset watermark."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from typing import Any

import pytest

import keel.events as ev
from keel.contracts import QuarantineDetail, RunDetail, RunEvent
from services.notifier.config import ConfigError, NotifierSettings, parse_endpoints
from services.notifier.core import Answer, Policy, judge, next_delay, notification_for, retry_after
from services.notifier.signing import sign, verify
from services.notifier.watermark import Watermarks

TS = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
PUBLIC = "https://keel.example.com/"


def event(kind: str, **over: Any) -> RunEvent:
    fields: dict[str, Any] = {
        "event_id": f"run-1:refund:1:{kind}",
        "run_id": "run-1",
        "tenant_id": "acme",
        "workflow": "refund_once",
        "step": "refund",
        "event": kind,
        "ts": TS,
        "source": "scheduler",
    }
    return RunEvent(**{**fields, **over})


def body(e: RunEvent) -> dict[str, Any]:
    note = notification_for(e, PUBLIC)
    assert note is not None
    return json.loads(note.body)


def test_a_quarantine_opens_a_case_notification_with_links() -> None:
    case = QuarantineDetail(
        case_id="run-1:refund:1", reason="$.refund_id is null", failure_class="validation"
    )
    got = body(event(ev.QUARANTINED, quarantine=case))
    assert got == {
        "id": "run-1:refund:1:quarantined",
        "type": "case.opened",
        "tenant_id": "acme",
        "run_id": "run-1",
        "step": "refund",
        "case_id": "run-1:refund:1",
        "status": "quarantined",
        "reason": "$.refund_id is null",
        "ts": "2026-12-01T03:00:00+00:00",
        "links": {
            "run": "https://keel.example.com/v1/runs/run-1",
            "case": "https://keel.example.com/v1/quarantine/run-1:refund:1",
            "console": "https://keel.example.com/console/cases/run-1:refund:1",
        },
    }


def test_an_approval_request_is_an_approval_waiting() -> None:
    case = QuarantineDetail(case_id="run-1:refund:approval-1", reason="Refund 12.50?")
    got = body(event(ev.APPROVAL_REQUESTED, quarantine=case))
    assert (got["type"], got["status"], got["case_id"], got["reason"]) == (
        "approval.waiting",
        "awaiting_approval",
        "run-1:refund:approval-1",
        "Refund 12.50?",
    )


@pytest.mark.parametrize("kind", [ev.COMPLETED, ev.FAILED, ev.CANCELED])
def test_a_run_ending_is_a_run_ended_with_its_status_and_no_case(kind: str) -> None:
    got = body(
        event(kind, step=None, run=RunDetail(status=kind, reason="why" if kind != "completed" else None))
    )
    assert (got["type"], got["status"], got["case_id"], got["step"]) == ("run.ended", kind, None, None)
    assert got["links"] == {
        "run": "https://keel.example.com/v1/runs/run-1",
        "case": None,
        "console": "https://keel.example.com/console/runs/run-1",
    }
    assert got["reason"] == (None if kind == "completed" else "why")


@pytest.mark.parametrize(
    "kind",
    [ev.STARTED, ev.STEP_COMMITTED, ev.TOOL_FAILED, ev.QUARANTINE_RESOLVED, ev.DECISION_REFUSED, ev.PAUSED],
)
def test_other_events_notify_nobody(kind: str) -> None:
    assert notification_for(event(kind), PUBLIC) is None


def test_the_body_is_canonical_so_a_resend_signs_the_same_bytes() -> None:
    e = event(ev.COMPLETED, run=RunDetail(status="completed"))
    assert notification_for(e, PUBLIC) == notification_for(e, PUBLIC)
    raw = notification_for(e, PUBLIC).body  # type: ignore[union-attr]
    assert raw == json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":")).encode()


# -- signing -----------------------------------------------------------------------------------------
def test_sign_and_verify() -> None:
    raw = b'{"id":"e1"}'
    header = sign("s3cret", raw, 1_764_558_000)
    assert header.startswith("t=1764558000,v1=") and len(header.split("v1=")[1]) == 64
    assert verify("s3cret", raw, header, now=1_764_558_010)
    assert not verify("s3cret", b'{"id":"e2"}', header, now=1_764_558_010)  # tampered body
    assert not verify("other", raw, header, now=1_764_558_010)  # wrong secret
    assert not verify("s3cret", raw, header, now=1_764_558_000 + 301)  # too old: a replay
    forged = header.replace("t=1764558000", "t=1764558300")  # a fresh time on an old signature
    assert not verify("s3cret", raw, forged, now=1_764_558_300)
    assert not verify("s3cret", raw, "v1=abc", now=1_764_558_000)
    assert verify("s3cret", raw, f"{header},v1={'0' * 64}", now=1_764_558_000)  # rotation: any v1


def test_the_signature_is_hmac_sha256_of_time_dot_body() -> None:
    import hashlib
    import hmac

    want = hmac.new(b"k", b"5.{}", hashlib.sha256).hexdigest()
    assert sign("k", b"{}", 5) == f"t=5,v1={want}"


# -- retry policy ------------------------------------------------------------------------------------
POLICY = Policy(max_attempts=8, max_age_s=3600, backoff_s=1.0, backoff_max_s=60.0)


def test_backoff_doubles_with_jitter_within_half_to_whole_ceiling_and_caps() -> None:
    rng = random.Random(7)
    for n, ceiling in [(1, 1), (2, 2), (3, 4), (4, 8), (6, 32), (7, 60), (12, 60)]:
        delays = [next_delay(n, POLICY, rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays), (n, min(delays), max(delays))
        assert max(delays) - min(delays) > ceiling / 4  # jittered, not fixed


@pytest.mark.parametrize(
    "answer",
    [Answer(None, "ConnectError"), Answer(None, "ReadTimeout"), Answer(500), Answer(503), Answer(429)],
)
def test_no_answer_5xx_and_429_are_retried(answer: Answer) -> None:
    verdict = judge(answer, 1, 0.0, POLICY, random.Random(1))
    assert verdict.action == "retry" and 0.5 <= verdict.delay_s <= 1.0


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 422])
def test_other_4xx_give_up_at_once(status: int) -> None:
    verdict = judge(Answer(status), 1, 0.0, POLICY, random.Random(1))
    assert verdict.action == "give_up" and f"HTTP {status}" in verdict.reason


def test_2xx_is_delivered() -> None:
    assert judge(Answer(204), 3, 10.0, POLICY, random.Random(1)).action == "delivered"


def test_retry_after_is_respected() -> None:
    verdict = judge(Answer(429, retry_after_s=30.0), 1, 0.0, POLICY, random.Random(1))
    assert verdict.action == "retry" and verdict.delay_s == 30.0
    assert retry_after("7") == 7.0 and retry_after("Wed, 21 Oct 2026 07:28:00 GMT") is None


def test_given_up_after_max_attempts_or_max_age() -> None:
    assert judge(Answer(503), 7, 0.0, POLICY, random.Random(1)).action == "retry"
    last = judge(Answer(503), 8, 0.0, POLICY, random.Random(1))
    assert last.action == "give_up" and "after 8 attempts" in last.reason
    old = judge(Answer(None, "ConnectError"), 2, 3599.5, POLICY, random.Random(1))
    assert old.action == "give_up" and "3600 s" in old.reason


def test_the_whole_schedule_of_a_dead_endpoint() -> None:
    rng, waits, n = random.Random(3), [], 0
    while True:
        n += 1
        verdict = judge(Answer(502), n, sum(waits), POLICY, rng)
        if verdict.action != "retry":
            break
        waits.append(verdict.delay_s)
    assert n == 8 and len(waits) == 7
    assert all(waits[i] < waits[i + 1] * 2 for i in range(6))  # growing (never below half the next ceiling)
    # ceilings 1, 2, 4, 8, 16, 32, 60 (capped): between half of their sum and all of it
    assert 61.5 <= sum(waits) <= 123


# -- the offset watermark ----------------------------------------------------------------------------
TP0 = ("keel.run-events", 0)


def test_the_position_waits_for_the_oldest_unsettled_notification() -> None:
    marks = Watermarks()
    gen = marks.assign(TP0, 10, None)
    assert marks.to_commit() == {TP0: 10}  # a new group's start is committed at once
    marks.committed({TP0: 10})
    marks.read(TP0, 10, pending=False)
    marks.read(TP0, 11, pending=True)
    marks.read(TP0, 12, pending=False)
    marks.read(TP0, 13, pending=True)
    assert marks.to_commit() == {TP0: 11} and marks.pending() == 2
    marks.committed({TP0: 11})
    marks.settle(TP0, 13, gen)  # out of order: 11 still holds the position
    assert marks.to_commit() == {}
    marks.settle(TP0, 11, gen)
    assert marks.to_commit() == {TP0: 14} and marks.pending() == 0


def test_a_settle_from_an_earlier_ownership_moves_nothing() -> None:
    marks = Watermarks()
    old = marks.assign(TP0, 0, 0)
    marks.read(TP0, 0, pending=True)
    marks.revoke(TP0)
    new = marks.assign(TP0, 0, 0)
    marks.read(TP0, 0, pending=True)
    marks.settle(TP0, 0, old)
    assert not marks.owns(TP0, old) and marks.owns(TP0, new)
    assert marks.position(TP0) == 0 and marks.to_commit() == {}
    marks.settle(TP0, 0, new)
    assert marks.to_commit() == {TP0: 1}


def test_a_revoked_partition_is_not_committed() -> None:
    marks = Watermarks()
    marks.assign(TP0, 5, 5)
    marks.read(TP0, 5, pending=False)
    marks.revoke(TP0)
    assert marks.to_commit() == {} and marks.generation(TP0) is None


# -- configuration -----------------------------------------------------------------------------------
def test_webhooks_parse() -> None:
    got = parse_endpoints('{"acme": {"url": "https://h.example/x", "secret": "s"}}', "KEEL_WEBHOOKS")
    assert got["acme"].url == "https://h.example/x" and got["acme"].secret == "s"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("{nope", "not JSON"),
        ("[]", "expected"),
        ('{"acme": "https://x"}', "tenant 'acme': expected an object"),
        ('{"acme": {"url": "ftp://x", "secret": "s"}}', "url must be an http(s) URL"),
        ('{"acme": {"url": "https://x"}}', "secret must be a non-empty string"),
        ('{"acme": {"url": "https://x", "secret": "s", "sceret": 1}}', "unknown fields ['sceret']"),
    ],
)
def test_malformed_webhooks_say_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(ConfigError, match="KEEL_WEBHOOKS") as err:
        parse_endpoints(text, "KEEL_WEBHOOKS")
    assert says in str(err.value)


def test_webhooks_from_a_file_and_not_both(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "hooks.json"
    path.write_text('{"t1": {"url": "http://127.0.0.1:1/h", "secret": "x"}}')
    monkeypatch.setenv("KEEL_WEBHOOKS_FILE", str(path))
    assert set(NotifierSettings().endpoints()) == {"t1"}
    monkeypatch.setenv("KEEL_WEBHOOKS", "{}")
    with pytest.raises(ConfigError, match="not both"):
        NotifierSettings().endpoints()
    monkeypatch.delenv("KEEL_WEBHOOKS")
    monkeypatch.setenv("KEEL_WEBHOOKS_FILE", str(tmp_path / "missing.json"))
    with pytest.raises(ConfigError, match="cannot read"):
        NotifierSettings().endpoints()
    monkeypatch.setenv("KEEL_API_URL", "http://api.example:8080/")
    assert NotifierSettings().checked_public_url() == "http://api.example:8080"  # the API's, by default
    monkeypatch.setenv("KEEL_PUBLIC_URL", "keel.example.com")
    with pytest.raises(ConfigError, match="KEEL_PUBLIC_URL"):
        NotifierSettings().checked_public_url()
