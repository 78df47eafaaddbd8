"""The workflow on Celery + Redis, as the seed's stack ran it: a chain of three tasks, retried on errors.

Each task records when it started and when it returned (its result then goes to the Redis backend)
in a Redis list per phase: the peer's equivalent of step_started / step_committed.
"""

from __future__ import annotations

import json
import os
from typing import Any

import httpx
import redis
from celery import Celery, Task

from bench.peers import flow

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:26379/0")

app = Celery("keel_bench", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    task_acks_late=True,  # redelivered if a worker dies mid-task: the usual production setting
    worker_prefetch_multiplier=4,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
)
_redis: redis.Redis | None = None


def store() -> redis.Redis:
    global _redis
    if _redis is None:
        _redis = redis.Redis.from_url(REDIS_URL)
    return _redis


def record(phase: str, *marks: list[Any]) -> None:
    store().rpush(f"bench:marks:{phase}", *[json.dumps(m) for m in marks])


def _step(task: Task, phase: str, run_id: str, step: str, call: Any) -> Any:
    started = flow.mark(run_id, step, "step_started")
    try:
        out = call()
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        if task.request.retries + 1 >= flow.MAX_ATTEMPTS:
            record(phase, started, flow.mark(run_id, step, "failed"))
            store().incr(f"bench:ended:{phase}")
            raise
        record(phase, started)
        raise task.retry(exc=exc, countdown=flow.backoff_s(task.request.retries)) from exc
    record(phase, started, flow.mark(run_id, step, "step_committed"))
    return out


@app.task(bind=True, max_retries=flow.MAX_ATTEMPTS - 1)
def draft_email(self: Task, phase: str, run_id: str, lead: dict[str, str]) -> dict[str, str]:
    return dict(_step(self, phase, run_id, "draft_email", lambda: flow.draft(lead)))


@app.task(bind=True, max_retries=flow.MAX_ATTEMPTS - 1)
def log_to_crm(
    self: Task, drafted: dict[str, str], phase: str, run_id: str, lead: dict[str, str]
) -> dict[str, str]:
    _step(self, phase, run_id, "log_to_crm", lambda: flow.log_to_crm(run_id, lead, drafted))
    return drafted


@app.task(bind=True, max_retries=flow.MAX_ATTEMPTS - 1)
def send_email(self: Task, drafted: dict[str, str], phase: str, run_id: str, lead: dict[str, str]) -> str:
    message_id = str(_step(self, phase, run_id, "send_email", lambda: flow.send_email(run_id, lead, drafted)))
    record(phase, flow.mark(run_id, None, "completed"))
    store().incr(f"bench:ended:{phase}")
    return message_id
