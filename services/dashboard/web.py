"""The dashboard's figures as JSON over HTTP, read from the sink's tables."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import psycopg
from fastapi import FastAPI, Query

from services.dashboard import store
from services.dashboard.core import Window

MAX_MINUTES, MAX_HOURS = 7 * 24 * 60, 90 * 24


def make_app(
    connect: Callable[[], psycopg.Connection[Any]],
    scope: str,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> FastAPI:
    app = FastAPI(
        title="Keel dashboard", description="Figures over keel.run-events, counted once per event id"
    )

    @contextmanager
    def conn() -> Iterator[psycopg.Connection[Any]]:
        c = connect()
        try:
            yield c
        finally:
            c.close()

    @app.get("/dashboard/runs-by-status")
    def runs_by_status(minutes: int = Query(60, ge=1, le=MAX_MINUTES)) -> dict[str, Any]:
        """Runs entering each status per minute (UTC, the event's own time), over the last N minutes."""
        window = Window.last_minutes(now(), minutes)
        with conn() as c:
            return {
                "scope": scope,
                "since": window.since.isoformat(),
                "buckets": store.runs_by_status(c, scope, window),
            }

    @app.get("/dashboard/spend")
    def spend(hours: int = Query(24, ge=1, le=MAX_HOURS)) -> dict[str, Any]:
        """Spend per tenant per hour in integer micro-dollars, over the last N hours."""
        window = Window.last_hours(now(), hours)
        with conn() as c:
            return {
                "scope": scope,
                "since": window.since.isoformat(),
                "buckets": store.spend(c, scope, window),
            }

    @app.get("/dashboard/failure-classes")
    def failure_classes() -> dict[str, Any]:
        """Failures reported per class and event kind, since the dashboard's start of the log."""
        with conn() as c:
            return {"scope": scope, "counts": store.failure_classes(c, scope)}

    @app.get("/dashboard/deliveries")
    def deliveries() -> dict[str, Any]:
        """Messages delivered, redelivered copies skipped, and undecodable values: delivery evidence."""
        with conn() as c:
            return {"scope": scope, **store.deliveries(c, scope)}

    return app
