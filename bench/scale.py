"""`python -m bench.scale` (`make bench-scale`): Keel's scale curves, measured from outside.

1. throughput and latency against offered load, from 10 runs/s up to the knee;
2. flat-out throughput with 1, 2 and 4 instances of every service;
3. recovery after kill -9 of each service (and of the broker, when the bench started it): under a
   paced load, one process is killed and started again at once (as the supervisor would), and the
   longest stall of committed steps after the kill is compared with the longest before it.
Partition counts are the topic catalogue's (KEEL_TOPIC_PARTITIONS when the topics are created).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import time
from datetime import UTC, datetime
from typing import Any


def arguments(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.scale",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--rates",
        default=os.environ.get("KEEL_BENCH_SCALE_RATES", "10,20,40,80,160,320"),
        help="offered loads in runs/s, tried in order until the knee",
    )
    p.add_argument(
        "--seconds",
        type=float,
        default=float(os.environ.get("KEEL_BENCH_SCALE_S", "20")),
        help="length of each offered-load step and of each recovery phase",
    )
    p.add_argument(
        "--instances",
        default=os.environ.get("KEEL_BENCH_SCALE_INSTANCES", "1,2,4"),
        help="instances per service to compare flat out",
    )
    p.add_argument(
        "--runs",
        type=int,
        default=int(os.environ.get("KEEL_BENCH_RUNS", "2000")),
        help="runs flat out per instance count",
    )
    p.add_argument("--parts", default="load,instances,recovery", help="which curves to measure")
    return p.parse_args(argv)


def knee_reached(figs: dict[str, Any], offered_runs_per_s: float) -> bool:
    """Past the knee: the runs do not all end, or steps commit at under 90% of the offered rate
    (3 steps a run), or the run p99 passes 10 s."""
    done = figs["completed"] >= figs["runs"]
    rate = figs["steps_per_s_sustained"] or 0.0
    p99 = figs["run_latency_ms"].get("p99") or 0.0
    return not done or rate < 0.9 * 3 * offered_runs_per_s or p99 > 10_000


def stall(commits: list[float], at: float) -> dict[str, float | None]:
    """The longest gap between committed steps before `at` and from `at` on (a gap spanning `at`
    counts as after): how long the system stood still because of what happened at `at`."""
    ordered = sorted(commits)
    before = [b - a for a, b in zip(ordered, ordered[1:], strict=False) if b < at]
    after = [b - a for a, b in zip(ordered, ordered[1:], strict=False) if b >= at]
    return {
        "longest_gap_before_s": round(max(before), 3) if before else None,
        "longest_gap_after_s": round(max(after), 3) if after else None,
    }


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    from bench import procstat, report
    from bench.__main__ import _interrupt, machine
    from bench.keel_run import run_keel
    from bench.plan import Phase
    from bench.sims import Simulators
    from bench.stack import RESULTS, BenchStack, say, use_own_data_dir
    from keel.settings import Settings
    from keel_ops.stack import SERVICES, kafka, running_pid, start_background, wait_until
    from services.adapters.config import AdapterSettings
    from services.executor.router import RouterSettings

    signal.signal(signal.SIGTERM, _interrupt)
    use_own_data_dir()
    settings = Settings()
    tools = AdapterSettings()
    sims = Simulators(tools.base_url("email"), tools.base_url("crm"), RouterSettings().model_url)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "partitions": settings.topic_partitions,
    }
    stack = BenchStack(settings)
    seq = iter(range(1_000_000))

    def measure(phase: Phase) -> dict[str, Any]:
        raw = run_keel(
            settings, [phase], stack.service_pids(), sims, f"bench-{stamp}-s{next(seq)}", 0.0, 0, timeout_s=60
        )
        figs = report.system_figures(raw, [phase])["phases"][phase.name]
        figs["commits"] = [m[3] for m in raw["phases"][phase.name]["marks"] if m[2] == "step_committed"]
        return dict(figs)

    def row(label: str, f: dict[str, Any]) -> str:
        return (
            f"  {label:<22} steps/s {f['steps_per_s_sustained'] or 0:>7,.1f}   run p50/p99 "
            f"{f['run_latency_ms']['p50']}/{f['run_latency_ms']['p99']} ms   step p50/p99 "
            f"{f['step_latency_ms']['p50']}/{f['step_latency_ms']['p99']} ms   "
            f"ended {f['completed']}/{f['runs']}"
        )

    try:
        stack.up()
        settings = stack.settings  # through the local broker's admin door when it has one
        measure(Phase("warmup", 5, 5.0))
        parts = args.parts.split(",")
        if "load" in parts:
            say("offered load, up to the knee")
            out["load"] = {}
            for rate in [float(r) for r in args.rates.split(",")]:
                f = measure(Phase(f"load_{rate:g}", max(1, round(rate * args.seconds)), rate))
                f.pop("commits")
                out["load"][f"{rate:g}"] = f
                print(row(f"{rate:g} runs/s offered", f), flush=True)
                if knee_reached(f, rate):
                    say(f"knee: at {rate:g} runs/s offered")
                    break
        if "instances" in parts:
            say("instances per service, flat out")
            out["instances"] = {}
            for n in [int(i) for i in args.instances.split(",")]:
                stack.stop_services()
                stack.instances = n
                stack.start_services()
                measure(Phase("warmup", 10, 5.0))
                f = measure(Phase(f"flat_{n}", args.runs, None))
                f.pop("commits")
                f["peak_rss_mib_total"] = round(
                    sum(procstat.tree_peak_rss_mib(p) for p in stack.service_pids().values()), 1
                )
                out["instances"][str(n)] = f
                print(row(f"{n} instance(s) each", f), flush=True)
            stack.stop_services()
            stack.instances = 1
            stack.start_services()
            measure(Phase("warmup", 5, 5.0))
        if "recovery" in parts:
            say("recovery after kill -9, under 10 runs/s")
            out["recovery"] = {}
            victims = [*SERVICES, *(["broker"] if stack.kafka_started else [])]
            for victim in victims:
                phase = Phase(f"kill_{victim}", round(10 * args.seconds), 10.0)
                killed: dict[str, float] = {}

                def kill_later(victim: str = victim, killed: dict[str, float] = killed) -> None:
                    time.sleep(args.seconds / 3)  # into the phase, with load flowing
                    killed["at"] = time.time()
                    if victim == "broker":
                        kafka(settings, "kill", check=False)
                        kafka(settings, "start")
                    else:
                        name = f"bench-{victim}-0"
                        pid = running_pid(settings, name)
                        if pid is not None:
                            os.kill(pid, signal.SIGKILL)
                            # Until it is gone (a zombie counts as gone), or the restart would
                            # find the old pid alive and start nothing.
                            wait_until(
                                lambda: running_pid(settings, name) is None, 10, f"{name} to die", 0.01
                            )
                        proc = next(p for p in stack.service_processes() if p.name == name)
                        start_background(settings, proc)
                    killed["restarted"] = time.time()

                killer = threading.Thread(target=kill_later, daemon=True)
                killer.start()
                f = measure(phase)
                killer.join()
                rec = {
                    **stall(f.pop("commits"), killed.get("at", 0.0)),
                    "restart_s": round(killed.get("restarted", 0.0) - killed.get("at", 0.0), 2),
                    "ended": f"{f['completed']}/{f['runs']}",
                    "run_latency_ms": f["run_latency_ms"],
                }
                out["recovery"][victim] = rec
                print(
                    f"  kill -9 {victim:<10} longest stall after {rec['longest_gap_after_s']} s "
                    f"(before: {rec['longest_gap_before_s']} s); runs ended {rec['ended']}, "
                    f"run p99 {f['run_latency_ms']['p99']} ms",
                    flush=True,
                )
    finally:
        stack.down()
    path = RESULTS / f"scale-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    say(f"figures: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
