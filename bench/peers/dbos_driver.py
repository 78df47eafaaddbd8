"""Driver of the DBOS Transact peer: `python -m bench.peers.dbos_driver PLAN.json OUT.json`.

The workflow is a DBOS workflow of three steps, each retried like Keel's send step; runs are enqueued
on a DBOS queue (the documented way to run many workflows) served by this same process. Each step
records when it started and when it returned (DBOS then checkpoints its output in Postgres).
"""

from __future__ import annotations

import os
import threading
from collections import defaultdict
from typing import Any

from dbos import DBOS, DBOSConfig
from sqlalchemy import make_url

from bench.peers import flow
from bench.peers.driver import Peer, main

_lock = threading.Lock()
_marks: dict[str, list[list[Any]]] = defaultdict(list)
_ended: dict[str, int] = defaultdict(int)


def _record(phase: str, *marks: list[Any], ended: bool = False) -> None:
    with _lock:
        _marks[phase].extend(marks)
        _ended[phase] += int(ended)


def _timed(phase: str, run_id: str, step: str, call: Any) -> Any:
    started = flow.mark(run_id, step, "step_started")
    try:
        out = call()
    except BaseException:
        _record(phase, started)
        raise
    _record(phase, started, flow.mark(run_id, step, "step_committed"))
    return out


_RETRY = {
    "retries_allowed": True,
    "max_attempts": flow.MAX_ATTEMPTS,
    "interval_seconds": 0.2,
    "backoff_rate": 2.0,
}


@DBOS.step(**_RETRY)
def draft_email(phase: str, run_id: str, lead: dict[str, str]) -> dict[str, str]:
    return dict(_timed(phase, run_id, "draft_email", lambda: flow.draft(lead)))


@DBOS.step(**_RETRY)
def log_to_crm(phase: str, run_id: str, lead: dict[str, str], drafted: dict[str, str]) -> str:
    return str(_timed(phase, run_id, "log_to_crm", lambda: flow.log_to_crm(run_id, lead, drafted)))


@DBOS.step(**_RETRY)
def send_email(phase: str, run_id: str, lead: dict[str, str], drafted: dict[str, str]) -> str:
    return str(_timed(phase, run_id, "send_email", lambda: flow.send_email(run_id, lead, drafted)))


@DBOS.workflow()
def outbound_email(phase: str, run_id: str, lead: dict[str, str]) -> str:
    try:
        drafted = draft_email(phase, run_id, lead)
        log_to_crm(phase, run_id, lead, drafted)
        message_id = send_email(phase, run_id, lead, drafted)
    except Exception:
        _record(phase, flow.mark(run_id, None, "failed"), ended=True)
        raise
    _record(phase, flow.mark(run_id, None, "completed"), ended=True)
    return str(message_id)


def make_peer(plan: dict[str, Any]) -> Peer:
    url = make_url(plan["database_url"]).set(database=plan.get("dbos_database", "keel_bench_dbos"))
    config: DBOSConfig = {"name": "keel-bench", "system_database_url": url.render_as_string(False)}
    DBOS(config=config)
    DBOS.launch()
    queue = DBOS.register_queue(
        "bench",
        worker_concurrency=int(os.environ.get("BENCH_DBOS_CONCURRENCY", "16")),
        polling_interval_sec=float(os.environ.get("BENCH_DBOS_POLL_S", "0.1")),
    )

    def submit(phase: str, run_id: str, lead: dict[str, str]) -> None:
        queue.enqueue(outbound_email, phase, run_id, lead)

    def ended(phase: str) -> int:
        with _lock:
            return _ended[phase]

    def marks(phase: str) -> list[list[Any]]:
        with _lock:
            return list(_marks[phase])

    return Peer(submit, ended, marks)


if __name__ == "__main__":
    try:
        main(make_peer, "dbos")
    finally:
        DBOS.destroy()
