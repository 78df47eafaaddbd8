"""Tenants' webhooks from the whole stack (docs/notifications.md): a quarantine opens a case
notification, a finished run a run.ended one, each signed; failed deliveries are retried, a notifier
killed before delivering delivers after its restart, and one tenant's slow endpoint does not hold up
another tenant's notifications."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import httpx
import pytest
from harness import E2E_ENV, WEBHOOK_SECRETS, kill
from helpers import wait_for
from test_runs import submit

from keel import dlq
from keel.contracts import RunEvent
from keel.serde import Serde, registry_client
from keel.topics import RUN_EVENTS
from keel_ops.stack import service_process, start_background

pytestmark = pytest.mark.e2e
REFUND = {"charge_id": "ch_n0t1fy", "amount_cents": 700}
PUBLIC = E2E_ENV["KEEL_PUBLIC_URL"]


def fact(events, run_id: str, kind: str) -> RunEvent:
    wait_for(lambda: kind in events.kinds(run_id), 60, f"{kind} on run {run_id}: {events.kinds(run_id)}")
    return next(e for e in events.of(run_id) if e.event == kind)


def delivered(sims, event_id: str, timeout: float = 30.0) -> list[dict]:
    """The receiver's deliveries of one notification, once one of them succeeded."""
    wait_for(
        lambda: any(d["status"] == 200 for d in sims.deliveries(event_id)),
        timeout,
        f"a successful delivery of {event_id}: {[d['status'] for d in sims.deliveries(event_id)]}",
    )
    return sims.deliveries(event_id)


def signed(delivery: dict, tenant: str = "acme") -> dict:
    """The body of a delivery signed as docs/notifications.md documents it (asserted, and computed here
    rather than by the notifier's own `verify`): `t=<unix seconds>,v1=<hex HMAC-SHA256(the tenant's
    secret, "<t>." + the raw body)>`, with t within 5 minutes of now."""
    header = delivery["headers"]["keel-signature"]
    pairs = [part.partition("=")[::2] for part in header.split(",")]
    [t] = [int(v) for k, v in pairs if k == "t"]
    body = delivery["body"].encode()
    expected = hmac.new(WEBHOOK_SECRETS[tenant].encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    assert expected in [v for k, v in pairs if k == "v1"] and abs(time.time() - t) <= 300, header
    return json.loads(body)


def test_a_quarantined_run_opens_a_case_notification_signed_with_its_case(stack, sims, events):
    sims.fault("payments", kind="null_field", field="refund_id")
    run_id = submit(stack, "refund_once", REFUND)
    held = fact(events, run_id, "quarantined")
    [got] = delivered(sims, held.event_id)
    assert got["path"] == "/hook/acme" and got["headers"]["keel-event-id"] == held.event_id
    body = signed(got)
    case = held.quarantine.case_id
    assert body["type"] == "case.opened" and body["case_id"] == case == f"{run_id}:refund:1"
    assert (body["tenant_id"], body["run_id"], body["step"], body["status"]) == (
        "acme",
        run_id,
        "refund",
        "quarantined",
    )
    assert body["reason"] == held.quarantine.reason
    assert body["links"] == {
        "run": f"{PUBLIC}/v1/runs/{run_id}",
        "case": f"{PUBLIC}/v1/quarantine/{case}",
        "console": f"{PUBLIC}/console/cases/{case}",
    }


def test_a_completed_run_notifies_run_ended(stack, sims, events):
    run_id = submit(stack, "refund_once", REFUND)
    done = fact(events, run_id, "completed")
    [got] = delivered(sims, done.event_id)
    body = signed(got)
    assert (body["type"], body["status"], body["run_id"], body["case_id"]) == (
        "run.ended",
        "completed",
        run_id,
        None,
    )
    assert body["id"] == done.event_id and body["links"]["run"] == f"{PUBLIC}/v1/runs/{run_id}"


def test_a_receiver_failing_twice_still_gets_the_notification_once_successfully(stack, sims, events):
    sims.fault("receiver", kind="error", status=503, times=2, path="/hook/acme")
    run_id = submit(stack, "refund_once", REFUND)
    done = fact(events, run_id, "completed")
    got = delivered(sims, done.event_id)
    assert [d["status"] for d in got] == [503, 503, 200]
    assert {d["body"] for d in got} == {got[0]["body"]}  # the same notification each time
    for d in got:
        signed(d)  # each attempt signed afresh, each verifies


def test_a_notifier_killed_before_delivering_delivers_after_its_restart(stack, sims, events):
    # The receiver fails for now: the notification is being retried, unsettled, when the notifier dies.
    sims.fault("receiver", kind="error", status=503, times=1000, path="/hook/acme")
    run_id = submit(stack, "refund_once", REFUND)
    done = fact(events, run_id, "completed")
    # Three attempts span more than one commit interval (0.5 s): offsets were committed meanwhile.
    wait_for(lambda: len(sims.deliveries(done.event_id)) >= 3, 30, "three failed attempts")
    kill(stack, "notifier")
    httpx.delete(f"{sims.urls['receiver']}/_faults").raise_for_status()
    start_background(stack, service_process("notifier"))
    got = delivered(sims, done.event_id, timeout=45)
    assert [d["status"] for d in got].count(200) == 1
    signed(got[-1])


def test_a_notification_given_up_is_a_dead_letter_with_the_reason(stack, sims, events):
    sims.fault("receiver", kind="error", status=503, times=1000, path="/hook/other")
    run_id = submit(stack, "refund_once", REFUND, tenant="hooks-other")
    done = fact(events, run_id, "completed")
    # KEEL_WEBHOOK_MAX_ATTEMPTS (8) attempts, each refused, then no more.
    wait_for(lambda: len(sims.deliveries(done.event_id)) == 8, 60, "eight attempts")

    def letter():
        return next(
            (e.letter for e in dlq.entries(stack) if done.event_id in e.letter.reason),
            None,
        )

    wait_for(lambda: letter() is not None, 30, f"a dead letter naming {done.event_id}")
    found = letter()
    assert found.error_class == "webhook_undeliverable"
    assert found.consumer_group == E2E_ENV["KEEL_NOTIFIER_GROUP"]
    assert "HTTP 503 after 8 attempts" in found.reason and "/hook/other" in found.reason
    original = Serde(registry_client(stack.schema_registry_url)).decode(RUN_EVENTS, found.value)
    assert original.event_id == done.event_id  # the event itself is kept: a redrive notifies again
    assert len(sims.deliveries(done.event_id)) == 8


def test_a_slow_tenant_endpoint_does_not_delay_another_tenants_notifications(stack, sims, events):
    # Every request to the other tenant's endpoint outlasts the notifier's timeout (1 s in e2e).
    sims.fault("receiver", kind="latency", ms=2500, times=1000, path="/hook/other")
    slow_run = submit(stack, "refund_once", REFUND, tenant="hooks-other")
    slow = fact(events, slow_run, "completed")
    wait_for(lambda: sims.deliveries(slow.event_id), 30, "the slow endpoint's first attempt")
    run_id = submit(stack, "refund_once", REFUND)
    done = fact(events, run_id, "completed")
    delivered(sims, done.event_id, timeout=10)
    # The other tenant's notification is still being retried: acme's did not wait for it.
    attempts = sims.deliveries(slow.event_id)
    assert attempts and len(attempts) < 8 and all(d["path"] == "/hook/other" for d in attempts)
    signed(attempts[0], "hooks-other")
