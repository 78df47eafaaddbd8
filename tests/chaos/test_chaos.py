"""The chaos proof: exactly-once effect under at-least-once execution, with kill -9 everywhere.

Two instances of every scaling service. Runs go in over the topic (keyed by run_id, and by foreign
producers keyed otherwise) and over the API, while the simulators inject latency, 429s, 5xx (some
after the effect happened) and accept-then-timeout, the CRM runs without key dedup (only Keel's lookup
protects it), and the monkey kills: instances restarted under their own id, an instance left down so
the other one takes its partitions over, the registry, the API, the broker, and processes killed in the
middle of commit_transaction (an ambiguous commit). Then, from ground truth: per logical effect one
delivery for every committed step and none twice, the ledger once per key (read from the
non-compacted run-event log too), every run's log a valid lifecycle, rebuilt projections equal the
live ones, nothing stuck; recovery measured from outside.

`make test-slow` runs a small variant; `make chaos` the full one (KEEL_CHAOS_RUNS, KEEL_CHAOS_SECONDS).
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from pathlib import Path

import httpx
import psycopg
import pytest
from harness import E2E_ENV, rebuilt_projection_differences
from ledger_audit import ledger_commits_from_run_events, ledger_topic_cannot_have_been_compacted
from monkey import INSTANCES, SCALING, Monkey
from scenario import submit, wait_all_ended
from verify import verify

from keel.settings import Settings
from keel.workflows import Catalog
from keel_ops.stack import api_process, service_process, start_background, stop_background

pytestmark = [pytest.mark.chaos, pytest.mark.slow]
RUNS = int(os.environ.get("KEEL_CHAOS_RUNS", "40"))
SECONDS = float(os.environ.get("KEEL_CHAOS_SECONDS", "25"))
KILL_EVERY = float(os.environ.get("KEEL_CHAOS_KILL_EVERY", "3"))
SEED = int(os.environ.get("KEEL_CHAOS_SEED", str(int(time.time()))))
# The target is 5 s (make chaos asserts it). The small variant in make test asserts a looser bound: it
# still catches a regression to session-timeout recovery without turning CI red on a slow start-up.
RECOVERY_LIMIT_S = float(os.environ.get("KEEL_CHAOS_RECOVERY_LIMIT_S", "15"))
# A take-over waits for the victim's session to expire and its open transaction to time out.
TAKEOVER_LIMIT_S = float(os.environ.get("KEEL_CHAOS_TAKEOVER_LIMIT_S", "30"))
COMMIT_KILL_CHANCE = os.environ.get("KEEL_CHAOS_COMMIT_KILL", "0.003")
HOOKS = Path(__file__).parent / "hooks"

FAULTS = {
    "email": [
        {"kind": "latency", "ms": 300, "times": 10, "after": 2},
        {"kind": "rate_limit", "retry_after": 1, "times": 6, "after": 5},
        {"kind": "error", "status": 500, "times": 6, "after": 12},
        {"kind": "accept_then_timeout", "ms": 2500, "times": 6, "after": 20},
        {"kind": "accept_then_error", "status": 502, "times": 4, "after": 28},
    ],
    "crm": [
        {"kind": "latency", "ms": 300, "times": 10, "after": 3},
        {"kind": "error", "status": 503, "times": 6, "after": 8},
        {"kind": "accept_then_timeout", "ms": 2500, "times": 6, "after": 15},
        {"kind": "rate_limit", "retry_after": 1, "times": 6, "after": 25},
        {"kind": "accept_then_error", "status": 500, "times": 4, "after": 30},
    ],
    "model": [
        {"kind": "latency", "ms": 200, "times": 10, "after": 4},
        {"kind": "rate_limit", "retry_after": 1, "times": 4, "after": 10},
        {"kind": "error", "status": 500, "times": 4, "after": 20},
    ],
}


def hooked_services(settings: Settings, hooks: str) -> None:
    """Restart every service instance with the chaos hooks loaded (tests/chaos/hooks)."""
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(HOOKS), os.environ.get("PYTHONPATH", "")) if p)
    os.environ["KEEL_CHAOS_HOOKS"] = hooks
    for service in SCALING:
        for instance in INSTANCES:
            stop_background(settings, f"{service}-{instance}")
            start_background(settings, service_process(service, instance))


def hook_log(settings: Settings) -> list[str]:
    try:
        return (settings.data_dir / "logs" / "chaos-hooks.log").read_text().splitlines()
    except FileNotFoundError:
        return []


def chaos(stack: Settings, events, sims, *, hooks: str, crm_dedup: str, kills: bool):  # noqa: ANN001
    """Run the scenario; returns (verdict, figures, monkey, submitted, drained seconds)."""
    for name, rules in FAULTS.items():
        for rule in rules:
            sims.fault(name, **rule)
    sims.mode("crm", dedup=crm_dedup)
    hooked_services(stack, hooks)
    api = api_process(E2E_ENV["KEEL_API_URL"])
    monkey = Monkey(stack, SEED, api)
    submitted_all = threading.Event()
    t0 = time.monotonic()
    submitted = submit(stack, E2E_ENV["KEEL_API_URL"], RUNS, SECONDS, SEED, submitted_all)
    threading.Thread(target=monkey.supervise, daemon=True).start()
    plan = ["broker", "takeover", "registry", "api"] if kills else []
    # The take-over first (it takes a session timeout and a transaction timeout to measure), the broker
    # last, so the two outages do not overlap.
    at = {what: t0 + SECONDS * f for what, f in zip(plan, (0.85, 0.1, 0.4, 0.55), strict=False)}
    special = {
        "broker": monkey.kill_broker,
        "takeover": lambda: monkey.kill_for_good(down_for=TAKEOVER_LIMIT_S),
        "registry": monkey.kill_registry,
        "api": monkey.kill_api,
    }
    try:
        while kills and (not submitted_all.is_set() or time.monotonic() - t0 < SECONDS):
            time.sleep(monkey.rng.uniform(0.5, 1.5) * KILL_EVERY)
            due = [w for w in plan if time.monotonic() > at[w]]
            if due:
                plan.remove(due[0])
                special[due[0]]()
            else:
                monkey.kill_one()
        for what in plan:  # a short run may end before every planned kill came due
            special[what]()
        submitted_all.wait(SECONDS + 180)
        chaos_end = time.monotonic()
        wait_all_ended(events, submitted.accepted, 240)
        drained = time.monotonic() - chaos_end
    finally:
        monkey.stop()
    catalog = Catalog.configured()
    side_effects = {w: {s.name for s in catalog.get(w).steps if s.side_effects} for w in catalog.names()}
    stats = {name: sims.stats(name) for name in ("email", "crm")}
    verdict = verify(stack, submitted.accepted, stats, side_effects)
    return verdict, monkey, submitted, drained


def test_exactly_once_effects_under_kill_9(stack, keel, sims):
    events, _ = keel
    verdict, monkey, submitted, drained = chaos(
        stack, events, sims, hooks=f"kill_in_commit={COMMIT_KILL_CHANCE}", crm_dedup="none", kills=True
    )
    with psycopg.connect(stack.db_url(), autocommit=True) as conn:
        projection_diff, _ = rebuilt_projection_differences(stack, conn)
    from_log = ledger_commits_from_run_events(stack)
    compaction = ledger_topic_cannot_have_been_compacted(stack)
    fig = monkey.figures
    restart, takeover = fig.worst("restart"), fig.worst("takeover")
    near_broker = [(n, round(r, 2)) for n, _, at, r in fig.recoveries if fig.during_broker_outage(at, r)]
    faults = {n: sims.stats(n)["faults_fired"] for n in ("email", "crm", "model")}
    commit_kills = sum(1 for line in hook_log(stack) if line.endswith("kill_in_commit"))
    every = [r for _, how, _, r in fig.recoveries if how == "restart"]
    print(f"\n--- chaos (seed {SEED}) ---")
    print(
        f"runs accepted {len(submitted.accepted)} of {RUNS} {submitted.by_way}, API retries "
        f"{submitted.api_retries}: {dict(verdict.by_status)}"
    )
    print(
        f"kills {len(fig.kills)} ({', '.join(fig.kills)}); broker {fig.broker_kills}; "
        f"others {fig.other_kills}; killed inside commit_transaction {commit_kills}; "
        f"crashes restarted {len(fig.crashes_restarted)}"
    )
    print(f"faults fired {faults}")
    print(verdict.figures())
    print(
        f"ledger commits per key from the run-event log: {len(from_log.duplicates)} duplicated of "
        f"{from_log.keys}; ledger topic compactable: {compaction or 'no'}"
    )
    print(f"time to drain after the last kill: {drained:.1f}s")
    print(
        "recovery from outside, restart under the same id (s, worst per service): "
        + ", ".join(f"{k} {v:.2f}" for k, v in sorted(restart.items()))
        + (f"; median {statistics.median(every):.2f}" if every else "")
    )
    print(
        "recovery from outside, take-over by the other instance (s): "
        + ", ".join(f"{k} {v:.2f}" for k, v in sorted(takeover.items()))
    )
    print(f"unmeasured (no output of the victim's partitions within 60 s): {fig.unmeasured}")
    print(f"kills during the broker's outage (rejoin waits for the broker): {near_broker}")

    assert len(submitted.accepted) == RUNS
    assert verdict.failures() == {}
    assert from_log.duplicates == {} and compaction is None
    assert projection_diff == {}
    restarts = [k for k in fig.kills if "left down" not in k]
    assert fig.broker_kills == 1 and restarts and len(fig.kills) > len(restarts)
    assert fig.other_kills == ["registry", "api"]
    assert all(v < RECOVERY_LIMIT_S for v in restart.values()), f"recovery over {RECOVERY_LIMIT_S}s"
    assert all(v < TAKEOVER_LIMIT_S for v in takeover.values()), f"take-over over {TAKEOVER_LIMIT_S}s"


@pytest.fixture(autouse=True)
def _restore_plain_services(stack: Settings):
    """Afterwards: no second instances, no hooks; the -0 instances run plain again for later tests."""
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "KEEL_CHAOS_HOOKS")}
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    for service in SCALING:
        for instance in INSTANCES:
            stop_background(stack, f"{service}-{instance}")
        start_background(stack, service_process(service, INSTANCES[0]))
    api = api_process(E2E_ENV["KEEL_API_URL"])
    start_background(stack, api)
    httpx.get(f"{E2E_ENV['KEEL_API_URL']}/healthz", timeout=5)
