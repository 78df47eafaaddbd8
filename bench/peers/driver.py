"""Runs a plan of phases against one peer stack and writes what happened as JSON (raw marks).

Shared by the peers' drivers; runs inside each peer's own virtual environment, so it needs only the
standard library, httpx and the bench's pure modules.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench import procstat
from bench.plan import Phase, lead, run_ids_prefix
from bench.sims import Simulators


@dataclass
class Peer:
    """What a peer offers the driver: submit one run, how many of a phase ended, a phase's marks."""

    submit: Callable[[str, str, dict[str, str]], None]
    ended: Callable[[str], int]
    marks: Callable[[str], list[list[Any]]]


def _offer(peer: Peer, phase: Phase, prefix: str) -> dict[str, float]:
    submitted: dict[str, float] = {}
    start = time.monotonic()
    for i in range(phase.count):
        if phase.rate:
            wait = start + i / phase.rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)  # pacing
        run_id = f"{prefix}-{i}"
        submitted[run_id] = time.time()
        peer.submit(phase.name, run_id, lead(run_id))
    return submitted


def run_plan(peer: Peer, plan: dict[str, Any], say: Callable[[str], None]) -> dict[str, Any]:
    sims = Simulators(**plan["sims"])
    pids: dict[str, int] = {k: int(v) for k, v in plan["pids"].items()}
    if plan.get("driver_is_the_system"):  # DBOS runs the workflows inside the driver's process
        pids["dbos"] = os.getpid()
    out: dict[str, Any] = {"phases": {}}
    for phase in (Phase.from_dict(p) for p in plan["phases"]):
        prefix = run_ids_prefix(plan["run_prefix"], phase)
        if phase.timeout_every:
            sims.reset()
            sims.timeouts_on_email(phase.count, phase.timeout_every, plan["hang_ms"])
        cpu0 = {k: procstat.tree_cpu_seconds(p) for k, p in pids.items()}
        say(f"{phase.name}: offering {phase.count} runs" + (f" at {phase.rate:g}/s" if phase.rate else ""))
        submitted = _offer(peer, phase, prefix)
        deadline, last = time.monotonic() + plan["timeout_s"] + phase.count / 10, 0.0
        while (done := peer.ended(phase.name)) < phase.count and time.monotonic() < deadline:
            if time.monotonic() - last > 5:
                say(f"{phase.name}: {done}/{phase.count} runs ended")
                last = time.monotonic()
            time.sleep(0.1)  # polling the peer's own counter with a deadline
        cpu = {k: round(procstat.tree_cpu_seconds(p) - cpu0[k], 3) for k, p in pids.items()}
        record: dict[str, Any] = {"submitted": submitted, "marks": peer.marks(phase.name), "cpu_s": cpu}
        if phase.timeout_every:
            record["duplicates"] = sims.email_duplicates(prefix)
        out["phases"][phase.name] = record
    out["peak_rss_mib"] = {k: round(procstat.tree_peak_rss_mib(p), 1) for k, p in pids.items()}
    return out


def main(make_peer: Callable[[dict[str, Any]], Peer], name: str) -> None:
    plan = json.loads(open(sys.argv[1]).read())

    def say(msg: str) -> None:
        print(f"bench:   {name} {msg}", flush=True)

    result = run_plan(make_peer(plan), plan, say)
    with open(sys.argv[2], "w") as f:
        json.dump(result, f)
