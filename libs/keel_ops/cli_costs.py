"""`keel costs`: what was spent, grouped as asked, through GET /v1/costs (one SQL query on the
projections); a tenant's key sees its own costs, an operator's every tenant's or one (--tenant)."""

from __future__ import annotations

import argparse
from typing import Any

from keel.settings import Settings
from keel_ops.cli_runs import api

HELP = "costs grouped by tenant, agent, task, workflow, step, model, run or day (exact sums)"
GROUPS = "tenant,workflow,run,step,agent,task,model,day"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--group-by",
        default="tenant",
        help=f"comma-separated columns among {GROUPS} (default tenant; '' for the total only)",
    )
    p.add_argument("--from", dest="start", help="from this ISO date or date-time (UTC), included")
    p.add_argument("--to", dest="end", help="to this ISO date or date-time (UTC), excluded")
    p.add_argument("--tenant", help="operators: only this tenant's costs")


def run(settings: Settings, args: argparse.Namespace) -> int:
    params = {"group_by": args.group_by}
    for name, value in (("from", args.start), ("to", args.end), ("tenant", args.tenant)):
        if value:
            params[name] = value
    print(table(api(settings, "GET", "/v1/costs", params=params)))
    return 0


def table(body: dict[str, Any]) -> str:
    """One line per group, its columns then USD (exact), micro-dollars and facts; the total last."""
    groups: list[str] = body["group_by"]
    head = [*groups, "cost_usd", "cost_micros", "facts"]
    lines = [[_cell(row.get(g)) for g in groups] + _amounts(row) for row in body["rows"]]
    total = ["TOTAL", *[""] * (len(groups) - 1)] if groups else []
    lines.append(total + _amounts(body["total"]))
    widths = [max(len(r[i]) for r in [head, *lines]) for i in range(len(head))]
    numeric = set(range(len(groups), len(head)))

    def render(cells: list[str]) -> str:
        out = [
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(out).rstrip()

    return "\n".join(render(r) for r in [head, *lines])


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def _amounts(row: dict[str, Any]) -> list[str]:
    return [row["cost_usd"], str(row["cost_micros"]), str(row["facts"])]
