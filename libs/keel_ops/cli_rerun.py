"""`keel rerun`: re-run a run from a step through the API (docs/rerun.md), one run or every run that
matches a filter, rate-limited, with a progress line per run."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from keel.settings import Settings
from keel_ops.cli_runs import api

HELP = (
    "re-run a run from a step (RUN --from-step NAME [--patch input.json]), or every run matching "
    "--workflow/--status [--since --until --failure-class] (rate-limited with --rate N/s): the steps "
    "before it reuse the run's committed outputs, unchanged steps keep its keys (nothing sent twice)"
)


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_id", nargs="?", help="the run to re-run (or a filter: --workflow and --status)")
    p.add_argument("--from-step", required=True, help="the step to continue live from")
    p.add_argument("--patch", help="a JSON file: a merge patch (RFC 7386) of the run input")
    p.add_argument("--workflow", help="bulk: runs of this workflow")
    p.add_argument("--status", help="bulk: runs in this status (completed, failed, canceled)")
    p.add_argument("--since", help="bulk: runs created at or after this ISO time")
    p.add_argument("--until", help="bulk: runs created before this ISO time")
    p.add_argument("--failure-class", help="bulk: runs with an attempt that failed with this class")
    p.add_argument("--rate", default="1/s", help="bulk: at most N re-runs per second, as N/s (default 1/s)")
    p.add_argument("--dry-run", action="store_true", help="bulk: list the matching runs, re-run none")
    p.add_argument(
        "--idempotency-key",
        help="sent as Idempotency-Key: repeating the command with it re-runs no run twice (per origin)",
    )


@dataclass
class Filter:
    workflow: str
    status: str
    since: datetime | None = None
    until: datetime | None = None
    failure_class: str | None = None

    def created_in_range(self, run: dict[str, Any]) -> bool:
        created = datetime.fromisoformat(run["created_at"])
        return (self.since is None or created >= self.since) and (self.until is None or created < self.until)


def _when(text: str | None) -> datetime | None:
    """An ISO time; without a zone it is UTC (the API's times are)."""
    if not text:
        return None
    at = datetime.fromisoformat(text)
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def parse_rate(text: str) -> float:
    """'N/s' (or a bare N) -> seconds between two re-runs."""
    number = text.removesuffix("/s")
    rate = float(number)
    if not rate > 0:
        raise ValueError(f"--rate must be a positive number per second, got {text!r}")
    return 1.0 / rate


@dataclass
class Pacer:
    """At most one call per `interval` seconds: waits (with `sleep`) for the next slot."""

    interval: float
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    next_at: float | None = field(default=None)

    def wait(self) -> None:
        now = self.clock()
        if self.next_at is not None and now < self.next_at:
            self.sleep(self.next_at - now)
            now = self.next_at
        self.next_at = now + self.interval


def matching(settings: Settings, flt: Filter) -> Iterator[dict[str, Any]]:
    """The tenant's runs that match, newest first, page by page (the API filters workflow and status;
    the time range and failure class are checked here)."""
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"workflow": flt.workflow, "status": flt.status, "limit": 200}
        if cursor:
            params["cursor"] = cursor
        page = api(settings, "GET", "/v1/runs", params=params)
        for run in page["runs"]:
            if not flt.created_in_range(run):
                continue
            if flt.failure_class is not None and not _failed_with(settings, run, flt.failure_class):
                continue
            yield run
        cursor = page.get("next_cursor")
        if not cursor:
            return


def _failed_with(settings: Settings, run: dict[str, Any], failure_class: str) -> bool:
    detail = api(settings, "GET", f"/v1/runs/{run['run_id']}")
    return any(a.get("failure_class") == failure_class for s in detail["steps"] for a in s["attempts"])


def rerun_one(
    settings: Settings, run_id: str, from_step: str, patch: dict[str, Any] | None, key: str | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"from_step": from_step}
    if patch is not None:
        body["patch"] = patch
    headers = {"Idempotency-Key": key} if key else {}
    reply: dict[str, Any] = api(settings, "POST", f"/v1/runs/{run_id}/rerun", json=body, headers=headers)
    return reply


def _line(reply: dict[str, Any]) -> str:
    return (
        f"{reply['rerun_of']} -> {reply['run_id']} from {reply['from_step']} "
        f"(reused: {', '.join(reply['reused']) or 'none'}; live: {', '.join(reply['live'])})"
    )


def run(settings: Settings, args: argparse.Namespace, pacer: Pacer | None = None) -> int:
    patch = json.loads(Path(args.patch).read_text()) if args.patch else None
    if patch is not None and not isinstance(patch, dict):
        raise ValueError("--patch must hold a JSON object (a merge patch of the run input)")
    if args.run_id:
        if args.workflow or args.status:
            raise ValueError("give a RUN, or a filter (--workflow and --status), not both")
        print(_line(rerun_one(settings, args.run_id, args.from_step, patch, args.idempotency_key)))
        return 0
    if not (args.workflow and args.status):
        raise ValueError("keel rerun needs a RUN, or --workflow and --status to re-run every match")
    flt = Filter(
        args.workflow,
        args.status,
        _when(args.since),
        _when(args.until),
        args.failure_class,
    )
    found = list(matching(settings, flt))  # the set is fixed first: re-runs never re-run themselves
    print(f"{len(found)} run(s) match")
    pacer = pacer or Pacer(parse_rate(args.rate))
    failed = 0
    for n, origin in enumerate(found, 1):
        if args.dry_run:
            print(f"[{n}/{len(found)}] {origin['run_id']} (dry run)")
            continue
        pacer.wait()
        try:
            reply = rerun_one(settings, origin["run_id"], args.from_step, patch, args.idempotency_key)
            print(f"[{n}/{len(found)}] {_line(reply)}")
        except Exception as exc:  # one refusal (say, a run without that step) does not stop the rest
            failed += 1
            print(f"[{n}/{len(found)}] {origin['run_id']}: not re-run: {exc}")
    print(f"done: {len(found) - failed} re-run(s), {failed} refused")
    return 0 if failed == 0 else 1
