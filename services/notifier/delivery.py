"""Delivery: one worker thread and queue per tenant, so one tenant's slow or dead endpoint never delays
another tenant's notifications. A worker posts its tenant's notifications in order, each until it is
delivered or given up (core.judge), then hands the outcome to `settle` (the shell records it)."""

from __future__ import annotations

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


class TenantWorker:
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
        # trust_env=False: a proxy configured in the environment must not see loopback receivers.
        self.client = httpx.Client(trust_env=False)
        self.thread = threading.Thread(target=self._run, name=f"notify-{tenant}", daemon=True)
        self.thread.start()

    def submit(self, job: Job) -> None:
        self.jobs.put(job)

    def _run(self) -> None:
        try:
            while not self.stopped.is_set():
                try:
                    job = self.jobs.get(timeout=0.2)
                except queue.Empty:
                    continue
                self._deliver(job)
        finally:
            self.client.close()

    def _deliver(self, job: Job) -> None:
        """Attempts until delivered or given up. A job whose partition this process lost is left to its
        new owner (it re-reads it from the committed offset), and so is one in hand at shutdown."""
        started, attempts = time.monotonic(), 0
        while not self.stopped.is_set() and self.owned(job):
            attempts += 1
            answer = post(self.client, self.endpoint, job.notification, self.policy.timeout_s)
            age = time.monotonic() - started
            verdict = judge(answer, attempts, age, self.policy, self.rng)
            if verdict.action == "retry":
                log.info(
                    "webhook %s to %s: %s; attempt %d in %.2f s",
                    job.notification.event_id,
                    self.tenant,
                    verdict.reason,
                    attempts + 1,
                    verdict.delay_s,
                )
                self.stopped.wait(verdict.delay_s)
                continue
            result = "delivered" if verdict.action == "delivered" else "gave_up"
            outcome = Outcome(job, result, attempts, answer, verdict.reason, int(age * 1000))
            # Recording a give-up (a dead letter) can fail: try again until it lands or we stop.
            wait = 0.5
            while not self.settle(outcome) and not self.stopped.wait(wait):
                wait = min(wait * 2, 10.0)
            return

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)
