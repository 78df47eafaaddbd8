"""Per-tenant delivery against the real receiver simulator (loopback HTTP, no broker): retries with
backoff on 5xx and 429, none on other 4xx, signatures that verify, and one tenant's slow endpoint not
holding up another's."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from helpers import wait_for

from infra.simulators.runner import running
from services.notifier.config import Endpoint
from services.notifier.core import Notification, Policy
from services.notifier.delivery import Job, Outcome, TenantWorker
from services.notifier.signing import verify

FAST = Policy(max_attempts=4, max_age_s=60, backoff_s=0.05, backoff_max_s=0.2, timeout_s=0.5)


@pytest.fixture(scope="module")
def receiver() -> Iterator[str]:
    with running("receiver") as url:
        yield url


@pytest.fixture
def hooks(receiver: str) -> str:
    httpx.post(f"{receiver}/_reset").raise_for_status()
    return receiver


class Settled:
    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []
        self.lock = threading.Lock()

    def __call__(self, outcome: Outcome) -> bool:
        with self.lock:
            self.outcomes.append(outcome)
        return True

    def of(self, event_id: str) -> Outcome | None:
        with self.lock:
            return next((o for o in self.outcomes if o.job.notification.event_id == event_id), None)


def job(event_id: str, tenant: str = "acme", offset: int = 0) -> Job:
    raw = json.dumps({"id": event_id, "type": "run.ended"}).encode()
    note = Notification(event_id, tenant, "run.ended", "run-1", None, raw)
    return Job(note, ("keel.run-events", 0), offset, 1, None)


def deliveries(url: str, event_id: str) -> list[dict[str, Any]]:
    return httpx.get(f"{url}/_deliveries", params={"event_id": event_id}).json()["deliveries"]


@pytest.fixture
def stopped() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


def worker(
    url: str, path: str, settled: Settled, stopped: threading.Event, tenant: str = "acme"
) -> TenantWorker:
    endpoint = Endpoint(f"{url}{path}", "secret-" + tenant)
    return TenantWorker(tenant, endpoint, FAST, lambda _: True, settled, stopped, random.Random(1))


def test_two_failures_then_delivered_signed(hooks: str, stopped: threading.Event) -> None:
    httpx.post(f"{hooks}/_faults", json={"kind": "error", "status": 503, "times": 2, "path": "/hook/acme"})
    settled = Settled()
    worker(hooks, "/hook/acme", settled, stopped).submit(job("e-1"))
    wait_for(lambda: settled.of("e-1") is not None, 10, "the notification to settle")
    outcome = settled.of("e-1")
    assert outcome is not None and (outcome.result, outcome.attempts) == ("delivered", 3)
    got = deliveries(hooks, "e-1")
    assert [d["status"] for d in got] == [503, 503, 200]
    for d in got:
        assert d["headers"]["keel-event-id"] == "e-1"
        assert verify("secret-acme", d["body"].encode(), d["headers"]["keel-signature"], int(time.time()))


def test_a_429_waits_its_retry_after(hooks: str, stopped: threading.Event) -> None:
    httpx.post(f"{hooks}/_faults", json={"kind": "rate_limit", "retry_after": 1, "path": "/hook/acme"})
    settled = Settled()
    worker(hooks, "/hook/acme", settled, stopped).submit(job("e-2"))
    wait_for(lambda: settled.of("e-2") is not None, 10, "the notification to settle")
    first, second = deliveries(hooks, "e-2")
    assert (first["status"], second["status"]) == (429, 200)
    assert second["received_at"] - first["received_at"] >= 0.95


def test_a_4xx_is_given_up_at_once_and_a_dead_endpoint_after_max_attempts(stopped: threading.Event) -> None:
    settled = Settled()
    # Nothing listens on port 9 here: every attempt is a connection error.
    dead = TenantWorker(
        "gone",
        Endpoint("http://127.0.0.1:9/hook", "s"),
        FAST,
        lambda _: True,
        settled,
        stopped,
        random.Random(1),
    )
    dead.submit(job("e-3", "gone"))
    wait_for(lambda: settled.of("e-3") is not None, 10, "the give-up")
    outcome = settled.of("e-3")
    assert outcome is not None and (outcome.result, outcome.attempts) == ("gave_up", 4)
    assert outcome.last.status is None and "after 4 attempts" in outcome.reason


def test_a_refusing_receiver_is_not_retried(hooks: str, stopped: threading.Event) -> None:
    settled = Settled()
    # /nohook is not a route of the receiver: 404, the receiver refuses it for good.
    worker(hooks, "/nohook", settled, stopped).submit(job("e-4"))
    wait_for(lambda: settled.of("e-4") is not None, 10, "the give-up")
    outcome = settled.of("e-4")
    assert outcome is not None and (outcome.result, outcome.attempts, outcome.last.status) == (
        "gave_up",
        1,
        404,
    )


def test_a_slow_tenant_does_not_delay_another(hooks: str, stopped: threading.Event) -> None:
    # Every request to the slow tenant's path outlasts the timeout: its worker spends seconds retrying.
    httpx.post(f"{hooks}/_faults", json={"kind": "latency", "ms": 2000, "times": 20, "path": "/hook/slow"})
    settled = Settled()
    slow = worker(hooks, "/hook/slow", settled, stopped, tenant="slow")
    fast = worker(hooks, "/hook/acme", settled, stopped)
    slow.submit(job("slow-1", "slow"))
    wait_for(lambda: deliveries(hooks, "slow-1"), 5, "the slow tenant's first attempt")
    fast.submit(job("fast-1"))
    wait_for(lambda: settled.of("fast-1") is not None, 3, "the other tenant's delivery")
    assert settled.of("slow-1") is None  # still being retried meanwhile


def test_a_job_whose_partition_was_lost_is_left_to_its_new_owner(
    hooks: str, stopped: threading.Event
) -> None:
    settled = Settled()
    lost = TenantWorker(
        "acme", Endpoint(f"{hooks}/hook/acme", "s"), FAST, lambda _: False, settled, stopped, random.Random(1)
    )
    lost.submit(job("e-5"))
    lost.submit(job("e-6"))
    sentinel = worker(hooks, "/hook/acme", settled, stopped)
    sentinel.submit(job("e-7"))
    wait_for(lambda: settled.of("e-7") is not None, 5, "a later delivery")
    wait_for(lost.jobs.empty, 5, "the lost worker to take both jobs")
    assert deliveries(hooks, "e-5") == [] and deliveries(hooks, "e-6") == []
    assert settled.of("e-5") is None and settled.of("e-6") is None


def test_a_notification_waiting_for_its_retry_does_not_hold_back_the_next(
    hooks: str, stopped: threading.Event
) -> None:
    httpx.post(f"{hooks}/_faults", json={"kind": "error", "status": 503, "times": 1, "path": "/hook/acme"})
    settled = Settled()
    patient = Policy(max_attempts=4, max_age_s=60, backoff_s=1.0, backoff_max_s=1.0, timeout_s=0.5)
    one = TenantWorker(
        "acme",
        Endpoint(f"{hooks}/hook/acme", "s"),
        patient,
        lambda _: True,
        settled,
        stopped,
        random.Random(1),
    )
    one.submit(job("first", offset=0))
    one.submit(job("second", offset=1))
    wait_for(lambda: settled.of("first") is not None, 10, "the first to be delivered on its retry")
    everything = httpx.get(f"{hooks}/_deliveries").json()["deliveries"]
    assert [(d["event_id"], d["status"]) for d in everything] == [
        ("first", 503),
        ("second", 200),  # while the first waited at least 0.5 s for its retry
        ("first", 200),
    ]


def test_a_give_up_that_cannot_be_recorded_yet_is_recorded_later(stopped: threading.Event) -> None:
    tries: list[Outcome] = []

    def flaky(outcome: Outcome) -> bool:
        tries.append(outcome)
        return len(tries) >= 3  # the dead letter lands on the third try

    dead = TenantWorker(
        "gone",
        Endpoint("http://127.0.0.1:9/hook", "s"),
        FAST,
        lambda _: True,
        flaky,
        stopped,
        random.Random(1),
    )
    dead.submit(job("e-8", "gone"))
    wait_for(lambda: len(tries) >= 3, 15, "three tries at recording the give-up")
    assert {(o.result, o.attempts) for o in tries} == {("gave_up", 4)}  # recorded, never attempted again
