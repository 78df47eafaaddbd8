"""`keel audit`: who did what, through GET /v1/audit, oldest first; a tenant's key sees its own rows, an
operator's every tenant's (or one: --tenant)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from keel.settings import Settings
from keel_ops.cli_runs import api

HELP = (
    "the audit trail: runs submitted, control commands, decisions, what each step read and wrote, "
    "dead letters redriven, definitions registered"
)
PAGE = 500  # the API's largest page


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", help="only this run's rows (your run id or Keel's)")
    p.add_argument(
        "--actor", help="only this principal's rows (key:ID, token:ISSUER#SUBJECT, service:NAME, cli:USER)"
    )
    p.add_argument(
        "--action",
        help="only this action (run_submitted, command:cancel, tool_called, dead_letter_redriven, "
        "workflow_registered, tool_registered, ...)",
    )
    p.add_argument("--since", help="from this ISO date or date-time (UTC), included")
    p.add_argument("--until", help="to this ISO date or date-time (UTC), excluded")
    p.add_argument("--tenant", help="operators: only this tenant's rows")
    p.add_argument("--limit", type=int, default=100, help="at most this many rows (default 100)")
    p.add_argument("--json", action="store_true", help="one JSON object per line, every column")


def run(settings: Settings, args: argparse.Namespace) -> int:
    rows = fetch(settings, args)
    for row in rows:
        print(json.dumps(row, sort_keys=True) if args.json else line(row))
    return 0


def fetch(settings: Settings, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every row the filters select, page after page, up to --limit."""
    params: dict[str, Any] = {}
    for name, value in (("run_id", args.run), ("actor", args.actor), ("action", args.action),
                        ("since", args.since), ("until", args.until), ("tenant", args.tenant)):  # fmt: skip
        if value:
            params[name] = value
    rows: list[dict[str, Any]] = []
    cursor = None
    while len(rows) < args.limit:
        page = {
            **params,
            "limit": min(PAGE, args.limit - len(rows)),
            **({"cursor": cursor} if cursor else {}),
        }
        body = api(settings, "GET", "/v1/audit", params=page)
        rows += body["audit"]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    return rows


def line(row: dict[str, Any]) -> str:
    """at, tenant, actor, action, run[/step], and what it concerned (the detail, compact)."""
    where = row["run_id"] or "-"
    if row["step"]:
        where += f"/{row['step']}"
    detail = json.dumps(row["detail"], sort_keys=True, separators=(",", ":")) if row["detail"] else ""
    cells = [row["at"], row["tenant_id"] or "-", row["actor"] or "-", row["action"], where, detail]
    return "  ".join(cells).rstrip()
