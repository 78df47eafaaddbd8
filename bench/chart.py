"""A PNG beside the JSON: latency percentiles per system and phase, and throughput flat out."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def draw(result: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # no display: write the file only
    import matplotlib.pyplot as plt

    systems = list(result["systems"])
    metrics = (
        ("step_latency_ms", "step: started -> committed"),
        ("handoff_gap_ms", "hand-off gap"),
        ("run_latency_ms", "run: submit -> completed"),
    )
    fig, axes = plt.subplots(1, len(metrics) + 1, figsize=(5 * (len(metrics) + 1), 4.5))
    seen = [p for s in systems for p in result["systems"][s].get("phases", {}) if p != "duplicates"]
    phases = list(dict.fromkeys(seen))  # in the plan's order: paced light load first, then flat out
    width = 0.8 / max(1, len(systems))
    for ax, (metric, title) in zip(axes, metrics, strict=False):
        for i, system in enumerate(systems):
            figs = result["systems"][system].get("phases", {})
            xs = [j + i * width for j in range(len(phases))]
            p50 = [(figs.get(p, {}).get(metric) or {}).get("p50") or 0 for p in phases]
            p99 = [(figs.get(p, {}).get(metric) or {}).get("p99") or 0 for p in phases]
            ax.bar(xs, p99, width, alpha=0.35, color=f"C{i}")
            ax.bar(xs, p50, width, label=f"{system} (p50 solid, p99 light)", color=f"C{i}")
        ref = {"step_latency_ms": "chain", "handoff_gap_ms": "one_hop"}.get(metric)
        floor = result.get("floor", {}).get(ref or "", {})
        paced = sorted((k for k in floor if k.startswith("paced_")), key=lambda k: float(k.split("_")[1]))
        if paced and floor[paced[0]]["latency_ms"].get("p50"):
            what = f"{floor['hops']} hop(s)"
            ax.axhline(
                floor[paced[0]]["latency_ms"]["p50"],
                color="k",
                ls="--",
                lw=1,
                label=f"floor p50, {what} ({paced[0]})",
            )
            ax.legend(fontsize=7)
        ax.set_xticks([j + width * (len(systems) - 1) / 2 for j in range(len(phases))], phases, fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel("ms (log)")
        ax.set_title(title)
    if systems:
        axes[0].legend(fontsize=7)
    ax = axes[-1]
    names, rates = [], []
    for system in systems:
        flat = result["systems"][system].get("phases", {}).get("flat_out", {})
        names.append(system)
        rates.append(flat.get("steps_per_s_sustained") or 0)
    floor = result.get("floor", {}).get("chain", {}).get("flat_out", {})
    if floor.get("msgs_per_s_overall"):
        hops = result["floor"]["chain"]["hops"]
        names.append(f"floor\n({hops} hops, msgs)")
        rates.append(floor["msgs_per_s_overall"])
    ax.bar(names, rates, color=[f"C{i}" for i in range(len(names))])
    ax.set_yscale("log")
    ax.set_title("flat out: committed steps/s")
    fig.suptitle(f"keel bench {result['started_at']} on {result['machine']['summary']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
