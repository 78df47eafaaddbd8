"""Delivery: one worker thread and queue per tenant, so one tenant's slow or dead endpoint never delays
another tenant's notifications. A worker posts each of its tenant's notifications until it is delivered
or given up (core.judge), then hands the outcome to `settle` (the shell records it)."""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from services.notifier.config import Endpoint
from services.notifier.core import Answer, Notification, Policy, judge, retry_after
from services.notifier.signing import EVENT_ID_HEADER, SIGNATURE_HEADER, sign
from services.notifier.watermark import TP

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """A notification read at `offset` of `tp` while this process owned it under `generation`."""

    notification: Notification
    tp: TP
    offset: int
    generation: int
    message: Any  # the consumed Message: its bytes and origin go into a dead letter


@dataclass(frozen=True)
class Outcome:
    """How a notification ended: `delivered` or `gave_up` (with why), after `attempts` POSTs."""

    job: Job
    result: str
    attempts: int
    last: Answer
    reason: str
    elapsed_ms: int


def post(client: httpx.Client, endpoint: Endpoint, note: Notification, timeout_s: float) -> Answer:
    """One signed POST; every failure to get an answer is an Answer without status, never an exception."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "keel-notifier",
        EVENT_ID_HEADER: note.event_id,
        # Signed at each attempt: a retry an hour later still carries a fresh, verifiable timestamp.
        SIGNATURE_HEADER: sign(endpoint.secret, note.body, int(time.time())),
    }
    try:
        resp = client.post(endpoint.url, content=note.body, headers=headers, timeout=timeout_s)
    except httpx.HTTPError as exc:
        return Answer(None, error=f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    return Answer(resp.status_code, retry_after_s=retry_after(resp.headers.get("retry-after")))


@dataclass
class _Delivery:
    """A job in the worker's hands: its attempts so far, and its outcome once it has one."""

    job: Job
    started: float
    attempts: int = 0
    outcome: Outcome | None = None  # set when delivered or given up, until `settle` takes it
    settle_wait: float = 0.5


class TenantWorker:
    """One tenant's deliveries: one POST at a time to its endpoint (polite to it), the next one chosen by
    when it is due. A notification waiting for its retry does not hold back the tenant's later ones, so a
    dead endpoint's notifications each run out their attempts in parallel in time, not one after another.
    Order of delivery within a tenant is therefore not guaranteed (receivers read `ts`)."""

    def __init__(
        self,
        tenant: str,
        endpoint: Endpoint,
        policy: Policy,
        owned: Callable[[Job], bool],
        settle: Callable[[Outcome], bool],
        stopped: threading.Event,
        rng: random.Random | None = None,
    ) -> None:
        self.tenant, self.endpoint, self.policy = tenant, endpoint, policy
        self.owned, self.settle, self.stopped = owned, settle, stopped
        self.rng = rng or random.Random()
        self.jobs: queue.Queue[Job] = queue.Queue()
        self._due: list[tuple[float, int, _Delivery]] = []  # a heap by the time each is due
        self._seq = itertools.count()  # ties keep arrival order
        # trust_env=False: a proxy configured in the environment must not see loopback receivers.
        self.client = httpx.Client(trust_env=False)
        self.thread = threading.Thread(target=self._run, name=f"notify-{tenant}", daemon=True)
        self.thread.start()

    def submit(self, job: Job) -> None:
        self.jobs.put(job)

    def _schedule(self, at: float, delivery: _Delivery) -> None:
        heapq.heappush(self._due, (at, next(self._seq), delivery))

    def _run(self) -> None:
        try:
            while not self.stopped.is_set():
                now = time.monotonic()
                if not self._due or self._due[0][0] > now:
                    wait = min(0.2, self._due[0][0] - now) if self._due else 0.2
                    try:
                        job = self.jobs.get(timeout=max(wait, 0.001))
                        self._schedule(time.monotonic(), _Delivery(job, time.monotonic()))
                    except queue.Empty:
                        pass
                    continue
                _, _, delivery = heapq.heappop(self._due)
                self._step(delivery)
        finally:
            self.client.close()

    def _step(self, d: _Delivery) -> None:
        """One attempt (or one try at settling). A job whose partition this process lost is dropped: its
        new owner re-reads it from the committed offset; so is whatever is in hand at shutdown."""
        if not self.owned(d.job):
            return
        if d.outcome is None:
            d.attempts += 1
            answer = post(self.client, self.endpoint, d.job.notification, self.policy.timeout_s)
            age = time.monotonic() - d.started
            verdict = judge(answer, d.attempts, age, self.policy, self.rng)
            if verdict.action == "retry":
                log.info(
                    "webhook %s to %s: %s; attempt %d in %.2f s",
                    d.job.notification.event_id,
                    self.tenant,
                    verdict.reason,
                    d.attempts + 1,
                    verdict.delay_s,
                )
                self._schedule(time.monotonic() + verdict.delay_s, d)
                return
            result = "delivered" if verdict.action == "delivered" else "gave_up"
            d.outcome = Outcome(d.job, result, d.attempts, answer, verdict.reason, int(age * 1000))
        # Recording a give-up (a dead letter) can fail: try again later until it lands.
        if not self.settle(d.outcome):
            self._schedule(time.monotonic() + d.settle_wait, d)
            d.settle_wait = min(d.settle_wait * 2, 10.0)

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)
