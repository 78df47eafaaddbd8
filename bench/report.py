"""From raw marks to the figures the bench prints and writes: one shape for Keel and every peer."""

from __future__ import annotations

from typing import Any

from bench import stats
from bench.plan import Phase


def system_figures(raw: dict[str, Any], phases: list[Phase]) -> dict[str, Any]:
    """Per reported phase: latencies, gaps, throughput; CPU seconds per committed step where the phase
    measured CPU; duplicates where it injected timeouts. Peak RSS per process over the whole run."""
    out: dict[str, Any] = {"phases": {}, "peak_rss_mib": raw.get("peak_rss_mib", {})}
    for phase in phases:
        rec = raw["phases"].get(phase.name)
        if rec is None or not phase.report:
            continue
        marks = [stats.Mark(*m) for m in rec["marks"]]
        figures = stats.phase_figures(rec["submitted"], marks)
        figures["outcomes"] = rec.get("outcomes") or outcomes_of(rec["submitted"], marks)
        if phase.measure_cpu and figures["committed_steps"]:
            cpu = rec.get("cpu_s", {})
            figures["cpu_s"] = cpu
            # The system's own processes; its broker or database ("infra:...") are shown, not summed,
            # as Kafka's and PostgreSQL's CPU are not counted for Keel either.
            own = sum(v for k, v in cpu.items() if not k.startswith("infra:"))
            figures["cpu_s_per_step"] = round(own / figures["committed_steps"], 5)
        if "duplicates" in rec:
            figures["duplicates"] = rec["duplicates"]
        out["phases"][phase.name] = figures
    return out


def outcomes_of(submitted: dict[str, float], marks: list[stats.Mark]) -> dict[str, int]:
    """How each submitted run ended, from its marks (the first terminal mark wins)."""
    ended: dict[str, str] = {}
    for m in sorted(marks, key=lambda m: m.t):
        if m.kind in ("completed", "failed") and m.run_id in submitted:
            ended.setdefault(m.run_id, m.kind)
    out: dict[str, int] = {}
    for run in submitted:
        kind = ended.get(run, "unfinished")
        out[kind] = out.get(kind, 0) + 1
    return out


def _ms(d: dict[str, Any] | None, key: str) -> str:
    v = (d or {}).get(key)
    return "-" if v is None else f"{v:,.1f}"


def table(result: dict[str, Any]) -> str:
    """The figures as a plain-text table: one row per system and phase, then the floor."""
    lines = [
        f"{'system':<8} {'phase':<16} {'runs':>5} {'done':>5} {'steps/s':>8} {'overall':>8} "
        f"{'run p50':>9} {'run p99':>9} {'step p50':>9} {'step p99':>9} {'gap p50':>8} {'gap p99':>8} "
        f"{'cpu/step':>9} {'dups':>5}"
    ]
    for system, figs in result["systems"].items():
        for phase, f in figs.get("phases", {}).items():
            dups = f.get("duplicates", {}).get("duplicates")
            cpu = f.get("cpu_s_per_step")
            lines.append(
                f"{system:<8} {phase:<16} {f['runs']:>5} {f['completed']:>5} "
                f"{f['steps_per_s_sustained'] or 0:>8,.1f} {f['steps_per_s_overall'] or 0:>8,.1f} "
                f"{_ms(f['run_latency_ms'], 'p50'):>9} {_ms(f['run_latency_ms'], 'p99'):>9} "
                f"{_ms(f['step_latency_ms'], 'p50'):>9} {_ms(f['step_latency_ms'], 'p99'):>9} "
                f"{_ms(f['handoff_gap_ms'], 'p50'):>8} {_ms(f['handoff_gap_ms'], 'p99'):>8} "
                f"{'-' if cpu is None else f'{cpu * 1000:.1f}ms':>9} {'-' if dups is None else dups:>5}"
            )
        if figs.get("error"):
            lines.append(f"{system:<8} FAILED: {figs['error']}")
    floor = result.get("floor", {})
    for name, chain in floor.items():
        if not isinstance(chain, dict) or "hops" not in chain:
            continue
        for phase, f in chain.items():
            if isinstance(f, dict):
                lines.append(
                    f"floor    {name + ' ' + phase:<24} msgs/s {f['msgs_per_s_overall'] or 0:>9,.1f} "
                    f"(central 80%: {f['msgs_per_s_sustained'] or 0:>9,.1f})   "
                    f"p50 {_ms(f['latency_ms'], 'p50'):>7} ms   p99 {_ms(f['latency_ms'], 'p99'):>7} ms"
                )
    return "\n".join(lines)


def overhead(result: dict[str, Any]) -> dict[str, Any]:
    """Keel's step latency over the floor's chain, and its hand-off gap over one hop, at the same paced
    rate (p50): how many floors a step and a hand-off cost."""
    keel = result["systems"].get("keel", {}).get("phases", {})
    floor = result.get("floor", {})
    out: dict[str, Any] = {}
    for phase, figs in keel.items():
        if not phase.startswith("paced_"):
            continue
        chain = floor.get("chain", {}).get(phase, {}).get("latency_ms", {}).get("p50")
        hop = floor.get("one_hop", {}).get(phase, {}).get("latency_ms", {}).get("p50")
        step, gap = figs["step_latency_ms"].get("p50"), figs["handoff_gap_ms"].get("p50")
        out[phase] = {
            "step_p50_over_chain_p50": round(step / chain, 1) if step and chain else None,
            "gap_p50_over_hop_p50": round(gap / hop, 1) if gap and hop else None,
        }
    return out


def ratios(result: dict[str, Any]) -> str:
    result["overhead_over_floor"] = overhead(result)
    lines = []
    for phase, r in result["overhead_over_floor"].items():
        lines.append(
            f"keel {phase}: a step costs {r['step_p50_over_chain_p50']}x the floor's "
            f"{result['floor'].get('chain', {}).get('hops', '?')}-hop chain (p50); a hand-off "
            f"{r['gap_p50_over_hop_p50']}x one hop"
        )
    return "\n".join(lines)


def hops_table(result: dict[str, Any], system: str = "keel") -> str:
    """Keel's per-hop breakdown (consecutive events of a run, p50 / p99 ms) for each phase."""
    lines = []
    for phase, f in result["systems"].get(system, {}).get("phases", {}).items():
        hops = f.get("hops_ms") or {}
        if f.get("cpu_s") and f.get("committed_steps"):
            per = {k: round(v * 1000 / f["committed_steps"], 2) for k, v in f["cpu_s"].items()}
            lines.append(f"{system} {phase}: CPU ms per committed step, by process: {per}")
        lines.append(f"{system} {phase}: time between consecutive events of a run, p50 / p99 ms")
        for name, h in sorted(hops.items(), key=lambda kv: -(kv[1]["p50"] or 0)):
            lines.append(f"  {name:<58} {h['p50']:>9,.1f} {h['p99']:>9,.1f}  (n={h['n']})")
    return "\n".join(lines)
