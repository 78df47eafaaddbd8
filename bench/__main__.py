"""`python -m bench` (`make bench`): Keel, the raw Kafka floor and two peers, measured in one run.

Figures are printed and written to var/bench/bench-<time>.json with a PNG chart beside it (and
latest.json / latest.png). Settings come from KEEL_BENCH_* variables or the options below.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def arguments(argv: list[str] | None) -> argparse.Namespace:
    runs_default = int(os.environ.get("KEEL_BENCH_RUNS", "2000"))
    quick = runs_default <= 200
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Quick check that it works: KEEL_BENCH_RUNS=200 make bench",
    )
    p.add_argument(
        "--runs", type=int, default=runs_default, help="runs offered flat out (KEEL_BENCH_RUNS; default 2000)"
    )
    p.add_argument(
        "--rates",
        default=os.environ.get("KEEL_BENCH_RATES", "5,20"),
        help="paced light-load rates in runs/s (KEEL_BENCH_RATES; default 5,20)",
    )
    p.add_argument(
        "--paced-seconds",
        type=float,
        default=_env_float("KEEL_BENCH_PACED_S", 8 if quick else 20),
        help="length of each paced phase (KEEL_BENCH_PACED_S; default 20, 8 in quick mode)",
    )
    p.add_argument(
        "--dup-runs",
        type=int,
        default=int(os.environ.get("KEEL_BENCH_DUP_RUNS", 30 if quick else 100)),
        help="runs of the duplicate phase, one send in ten accepted then timed out "
        "(KEEL_BENCH_DUP_RUNS; default 100, 30 in quick mode; 0 skips it)",
    )
    p.add_argument(
        "--api-share",
        type=float,
        default=_env_float("KEEL_BENCH_API_SHARE", 0.1),
        help="share of Keel's runs submitted through the HTTP API (default 0.1)",
    )
    p.add_argument(
        "--hops",
        type=int,
        default=int(os.environ.get("KEEL_BENCH_HOPS", "4")),
        help="hops of the floor's chain: as many as a step takes (default 4)",
    )
    p.add_argument(
        "--peers",
        default=os.environ.get("KEEL_BENCH_PEERS", "celery,dbos"),
        help="peers to run beside Keel, comma-separated (default celery,dbos; '' for none)",
    )
    p.add_argument("--no-floor", action="store_true", help="skip the raw Kafka floor")
    p.add_argument("--no-keel", action="store_true", help="skip Keel (floor and peers only)")
    p.add_argument("--out", type=Path, default=None, help="output directory (default var/bench)")
    return p.parse_args(argv)


def machine() -> dict[str, Any]:
    model = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        mem_kib = 0
    cores = os.cpu_count() or 0
    return {
        "cores": cores,
        "cpu": model,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_at_start": os.getloadavg(),
        "summary": f"{cores} cores, {model}, {mem_kib / 1024 / 1024:.0f} GiB",
    }


def _interrupt(signum: int, frame: object) -> None:
    # SIGTERM (timeout, make interrupted) unwinds like Ctrl-C, so everything started is stopped again.
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    # Imported after parsing, so `--help` answers without the broker libraries.
    from bench import floor, report
    from bench.keel_run import run_keel
    from bench.peers.run import run_celery, run_dbos
    from bench.plan import build_plan
    from bench.sims import Simulators
    from bench.stack import RESULTS, BenchStack, say, use_own_data_dir
    from keel import db
    from keel.settings import Settings
    from services.adapters.config import AdapterSettings
    from services.executor.router import RouterSettings

    use_own_data_dir()
    settings = Settings()
    out_dir = args.out or RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    phases = build_plan(args.runs, rates, args.paced_seconds, args.dup_runs)
    tools = AdapterSettings()
    hang_ms = int(tools.tool_timeout_s * 1000) + 1500  # past the tool timeout: the call's outcome is unknown
    sims_conf = {
        "email_url": tools.base_url("email"),
        "crm_url": tools.base_url("crm"),
        "model_url": RouterSettings().model_url,
    }
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    result: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": {**vars(args), "out": str(out_dir), "phases": [p.to_dict() for p in phases]},
        "floor": {},
        "systems": {},
    }
    t0 = time.monotonic()
    stack = BenchStack(settings)
    try:
        say("bringing up the stack (broker, registry, database, simulators, services, API)")
        peers = [p.strip() for p in args.peers.split(",") if p.strip()]
        stack.up(keel=not args.no_keel, simulators=bool(peers) or not args.no_keel)
        settings = stack.settings  # through the local broker's admin door when it has one
        sims = Simulators(**sims_conf)
        if not args.no_floor:
            for name, hops in (("one_hop", 1), ("chain", args.hops)):
                say(f"floor: {hops} transactional hop(s), paced at {args.rates}/s and flat out")
                result["floor"][name] = floor.measure(
                    settings.kafka_bootstrap,
                    hops,
                    rates,
                    min(args.paced_seconds, 10),
                    max(3 * args.runs, 5000),
                )
        if not args.no_keel:
            say("keel: the outbound_email workflow")
            sims.reset()
            raw = run_keel(
                settings,
                phases,
                {**stack.service_pids(), **stack.infra_pids()},
                sims,
                f"bench-{stamp}-keel",
                args.api_share,
                hang_ms,
                timeout_s=120,
            )
            keel = result["systems"]["keel"] = report.system_figures(raw, phases)
            keel["api_errors"] = raw["api_errors"]
            keel["kafka_ts_minus_event_ts_ms_p50"] = raw["kafka_ts_minus_event_ts_ms_p50"]
        stack.stop_services()  # the peers get the machine to themselves (and the simulators)
        plan = {
            "sims": sims_conf,
            "run_prefix": f"bench-{stamp}",
            "hang_ms": hang_ms,
            "timeout_s": 120,
            "phases": [p.to_dict() for p in phases],
        }
        os.environ["BENCH_TOOL_TIMEOUT_S"] = str(tools.tool_timeout_s)
        for peer in peers:
            say(f"{peer}: the same workflow")
            sims.reset()
            try:
                if peer == "celery":
                    raw = run_celery({**plan, "run_prefix": f"{plan['run_prefix']}-celery"}, out_dir)
                elif peer == "dbos":
                    raw = run_dbos(
                        {**plan, "run_prefix": f"{plan['run_prefix']}-dbos"},
                        out_dir,
                        db.database_url(settings),
                    )
                else:
                    raise ValueError(f"unknown peer {peer!r} (known: celery, dbos)")
                result["systems"][peer] = report.system_figures(raw, phases)
            except Exception as exc:  # one peer failing must not lose the others' figures
                traceback.print_exc()
                result["systems"][peer] = {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        say("tearing down what the bench started")
        stack.down()
    result["seconds"] = round(time.monotonic() - t0, 1)
    path = out_dir / f"bench-{stamp}.json"
    path.write_text(json.dumps(result, indent=2))
    (out_dir / "latest.json").write_text(json.dumps(result, indent=2))
    print()
    print(report.table(result))
    print(report.ratios(result))
    print(report.hops_table(result))
    try:
        from bench.chart import draw

        png = draw(result, out_dir / f"bench-{stamp}.png")
        (out_dir / "latest.png").write_bytes(png.read_bytes())
        say(f"chart: {png}")
    except ImportError:
        say("matplotlib is not installed: no chart (pip install matplotlib)")
    say(f"figures: {path} ({result['seconds']:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
