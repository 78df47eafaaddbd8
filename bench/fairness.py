"""`python -m bench.fairness` (`make bench-fairness`): a quiet tenant's run latency alone and under a noisy
tenant's burst (10,000 runs by default), with fair dispatch on (the noisy tenant held at a small limit of
attempts in flight) and, for comparison, off (no limit): docs/tenancy.md section 6.

Per mode: the scheduler is (re)started with that mode's limits; the quiet tenant runs `--quiet` runs one
after the other (alone); then the noisy tenant's burst is offered flat out on the topic, and the quiet
tenant submits a run every `--every` seconds while the burst lasts. Latency: submit -> the run's
`completed` event (its `ts`), read from keel.run-events as in `make bench`. Not part of `make test`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import time
import uuid
from datetime import UTC, datetime
from typing import Any


def arguments(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.fairness",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--burst", type=int, default=int(os.environ.get("KEEL_BENCH_FAIR_BURST", "10000")))
    p.add_argument("--limit", type=int, default=int(os.environ.get("KEEL_BENCH_FAIR_LIMIT", "16")))
    p.add_argument("--quiet", type=int, default=10, help="quiet runs measured alone")
    p.add_argument("--every", type=float, default=2.0, help="seconds between quiet runs under the burst")
    p.add_argument("--modes", default=os.environ.get("KEEL_BENCH_FAIR_MODES", "fair,off"))
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds a burst may take at most")
    return p.parse_args(argv)


NOISY, QUIET = "acme", "globex"


def percentiles(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50": None, "p90": None, "max": None}
    ordered = sorted(values)
    return {
        "n": len(values),
        "p50": round(statistics.median(ordered) * 1000),
        "p90": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))] * 1000),
        "max": round(ordered[-1] * 1000),
    }


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    from bench.__main__ import _interrupt, machine
    from bench.events import EventCollector
    from bench.plan import lead
    from bench.stack import PREFIX, RESULTS, BenchStack, _renamed, say, use_own_data_dir
    from keel.contracts import RunRequested
    from keel.idempotency import canonical_json
    from keel.producer import make_producer
    from keel.serde import Serde, registry_client
    from keel.settings import Settings
    from keel.topics import RUN_REQUESTS
    from keel_ops.stack import service_process, start_background, stop_background

    signal.signal(signal.SIGTERM, _interrupt)
    use_own_data_dir()
    settings = Settings()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    prefix = f"bench-fair-{stamp}"
    stack = BenchStack(settings)
    out: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
    }
    out.update(burst=args.burst, limit=args.limit, modes={})
    serde = Serde(registry_client(settings.schema_registry_url))
    producer: Any = None  # made once the stack is up: the local broker's admin door exists from then on
    collector: EventCollector | None = None

    def submit(tenant: str) -> tuple[str, float]:
        run_id = f"{prefix}-{tenant}-{uuid.uuid4().hex[:12]}"
        req = RunRequested(
            request_id=f"req-{uuid.uuid4().hex}",
            run_id=run_id,
            tenant_id=tenant,
            workflow="outbound_email",
            input_json=canonical_json(lead(run_id)),
            requested_at=datetime.now(UTC),
            requested_by="bench",
        )
        while True:
            try:
                producer.produce(RUN_REQUESTS, serde.encode(RUN_REQUESTS, req), run_id.encode())
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
        return run_id, time.time()

    def completed_at(run_id: str) -> float | None:
        assert collector is not None
        marks = [m.t for m in collector.snapshot({run_id}) if m.kind == "completed"]
        return marks[0] if marks else None

    def wait(runs: dict[str, float], timeout: float) -> None:
        assert collector is not None
        producer.flush(30)
        collector.wait_ended(runs, timeout, "runs")

    def restart_scheduler(limits: dict[str, Any]) -> None:
        name = PREFIX + "scheduler-0"
        stop_background(settings, name)
        env = {**os.environ, "KEEL_TENANT_LIMITS": json.dumps(limits)}
        start_background(settings, _renamed(service_process("scheduler")), env)

    try:
        stack.up()
        settings = stack.settings  # through the local broker's admin door when it has one
        producer = make_producer(settings, **{"linger.ms": 5})
        collector = EventCollector(settings, prefix)
        for mode in args.modes.split(","):
            limits = {NOISY: {"max_inflight": args.limit if mode == "fair" else 0}}
            say(f"{mode}: scheduler with KEEL_TENANT_LIMITS={json.dumps(limits)}")
            restart_scheduler(limits)
            warm = dict([submit(QUIET)])
            wait(warm, 120)
            alone = []
            for _ in range(args.quiet):
                run_id, at = submit(QUIET)
                wait({run_id: at}, 60)
                done = completed_at(run_id)
                if done is not None:
                    alone.append(done - at)
            say(f"{mode}: offering {args.burst} runs of {NOISY} flat out")
            noisy = dict(submit(NOISY) for _ in range(args.burst))
            producer.flush(60)
            quiet: dict[str, float] = {}
            t0 = time.monotonic()
            while collector.ended(noisy) < len(noisy) and time.monotonic() - t0 < args.timeout:
                run_id, at = submit(QUIET)
                producer.flush(10)
                quiet[run_id] = at
                time.sleep(args.every)
            burst_s = time.monotonic() - t0
            wait(quiet, 120)
            under = [d - at for r, at in quiet.items() if (d := completed_at(r)) is not None]
            figures: dict[str, Any] = {
                "alone_ms": percentiles(alone),
                "under_burst_ms": percentiles(under),
                "burst_s": round(burst_s, 1),
                "noisy_outcomes": collector.outcomes(noisy),
                "quiet_outcomes": collector.outcomes(quiet),
            }
            out["modes"][mode] = figures
            a, u = figures["alone_ms"], figures["under_burst_ms"]
            print(
                f"bench: fairness {mode:<4} quiet tenant alone p50 {a['p50']} ms max {a['max']} ms | under a "
                f"burst of {args.burst} runs ({burst_s:.0f} s) p50 {u['p50']} ms p90 {u['p90']} ms max "
                f"{u['max']} ms (n={u['n']})",
                flush=True,
            )
    finally:
        if collector is not None:
            collector.close()
        stack.down()
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / f"fairness-{stamp}.json", "w") as f:
        json.dump(out, f, indent=2)
    print(json.dumps(out["modes"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
