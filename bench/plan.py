"""What every system under test is asked to do, in order: the same phases for Keel and the peers."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Phase:
    name: str
    count: int
    rate: float | None  # runs per second; None is flat out
    measure_cpu: bool = False
    timeout_every: int = 0  # accept-then-timeout on one email send in this many (0: no faults)
    report: bool = True  # the warm-up is run but not reported

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Phase:
        return Phase(**d)


def build_plan(runs: int, rates: list[float], paced_s: float, dup_runs: int) -> list[Phase]:
    """Warm-up, paced light load at each rate for `paced_s` seconds, `runs` flat out (CPU measured
    there), then the duplicate phase: `dup_runs` runs with one send in ten accepted and timed out."""
    phases = [Phase("warmup", 5, 5.0, report=False)]
    phases += [Phase(f"paced_{r:g}_per_s", max(1, round(r * paced_s)), r) for r in rates]
    phases.append(Phase("flat_out", runs, None, measure_cpu=True))
    if dup_runs:
        phases.append(Phase("duplicates", dup_runs, None, timeout_every=10))
    return phases


def lead(run_id: str) -> dict[str, str]:
    """The workflow's input. One recipient per run: the provider's delivered records then count each
    run's sends, whichever system sent them and whether or not it used idempotency keys."""
    return {"lead_email": f"{run_id}@bench.example", "lead_name": "Ada Lovelace", "product": "Keel"}


def run_ids_prefix(system_prefix: str, phase: Phase) -> str:
    """Run ids of a phase start with this (and must pass keel.intake's run id rule)."""
    return f"{system_prefix}-{phase.name.replace('_', '-')}"
