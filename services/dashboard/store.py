"""The dashboard's idempotent sink in Postgres: counted event ids and the figures, in one transaction.

Every figure moves only in the transaction that records the event id it came from, and a second copy of
an id (a redelivery after a restart, a replay from an earlier offset, a duplicate on the topic) finds its
id already there and adds nothing. So delivery may be at-least-once and the figures stay exact; the
consumer commits its Kafka offsets only after this transaction is durable.

The tables are a disposable projection: they live in their own schema, created here if missing, and
carry a `scope` (the dashboard's name, its consumer group by default) so dashboards over different
topics share the tables without mixing. Dropping a scope's rows and resetting its group rebuilds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from services.dashboard.core import Increments, Tally, Window, fold

SCHEMA = "keel_dashboard"
# One statement per table; IF NOT EXISTS: every start may run them, several instances at once.
DDL = (
    f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.counted_events (
        scope text NOT NULL, event_id text NOT NULL, counted_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (scope, event_id))""",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.runs_by_status (
        scope text NOT NULL, minute timestamptz NOT NULL, status text NOT NULL, runs bigint NOT NULL,
        PRIMARY KEY (scope, minute, status))""",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.spend (
        scope text NOT NULL, tenant_id text NOT NULL, hour timestamptz NOT NULL,
        cost_micros bigint NOT NULL, events bigint NOT NULL,
        PRIMARY KEY (scope, tenant_id, hour))""",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.failure_classes (
        scope text NOT NULL, failure_class text NOT NULL, event text NOT NULL, events bigint NOT NULL,
        PRIMARY KEY (scope, failure_class, event))""",
    # Deliveries seen and copies skipped: the evidence that redelivery happened and was absorbed.
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.deliveries (
        scope text PRIMARY KEY, delivered bigint NOT NULL, duplicates bigint NOT NULL,
        undecodable bigint NOT NULL)""",
)
_LOCK = 0x64617368  # serialises concurrent DDL runs (CREATE ... IF NOT EXISTS can race)


def ensure_tables(conn: psycopg.Connection[Any]) -> None:
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
        for statement in DDL:
            conn.execute(statement.encode())  # fixed text, not user input


@dataclass(frozen=True)
class Applied:
    """What one batch did: events counted for the first time, copies skipped, values left unread."""

    counted: int
    duplicates: int
    undecodable: int


def apply(conn: psycopg.Connection[Any], scope: str, tallies: list[Tally], undecodable: int = 0) -> Applied:
    """Count each tally whose event id this scope has not counted yet, all in one transaction. Events that
    add nothing to any figure are delivered but leave no id behind.

    Rows are locked in one fixed order (ids sorted, then buckets sorted, table by table), so two
    instances sharing a scope and its buckets wait for each other instead of deadlocking."""
    relevant = [t for t in tallies if not t.empty]
    ids = sorted({t.event_id for t in relevant})
    with conn.transaction():
        fresh = {
            row[0]
            for row in conn.execute(
                f"INSERT INTO {SCHEMA}.counted_events (scope, event_id) SELECT %s, unnest(%s::text[]) "
                "ON CONFLICT DO NOTHING RETURNING event_id",
                (scope, ids),
            )
        }
        # Only ids inserted just now count: a copy counted before (redelivered, replayed, duplicated on
        # the topic) adds nothing.
        add = fold(t for t in relevant if t.event_id in fresh)
        _upsert(conn, scope, add)
        duplicates = len(relevant) - len(fresh)
        conn.execute(
            f"INSERT INTO {SCHEMA}.deliveries AS d (scope, delivered, duplicates, undecodable) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (scope) DO UPDATE SET "
            "delivered = d.delivered + excluded.delivered, duplicates = d.duplicates + excluded.duplicates, "
            "undecodable = d.undecodable + excluded.undecodable",
            (scope, len(tallies) + undecodable, duplicates, undecodable),
        )
    return Applied(len(fresh), duplicates, undecodable)


def _upsert(conn: psycopg.Connection[Any], scope: str, add: Increments) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO {SCHEMA}.runs_by_status AS r VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (scope, minute, status) DO UPDATE SET runs = r.runs + excluded.runs",
            [(scope, minute, status, n) for (minute, status), n in sorted(add.runs.items())],
        )
        cur.executemany(
            f"INSERT INTO {SCHEMA}.spend AS s VALUES (%s, %s, %s, %s, %s) "
            "ON CONFLICT (scope, tenant_id, hour) DO UPDATE SET "
            "cost_micros = s.cost_micros + excluded.cost_micros, events = s.events + excluded.events",
            [(scope, t, h, micros, add.spend_events[(t, h)]) for (t, h), micros in sorted(add.spend.items())],
        )
        cur.executemany(
            f"INSERT INTO {SCHEMA}.failure_classes AS f VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (scope, failure_class, event) DO UPDATE SET events = f.events + excluded.events",
            [(scope, c, e, n) for (c, e), n in sorted(add.failures.items())],
        )


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def runs_by_status(conn: psycopg.Connection[Any], scope: str, window: Window) -> list[dict[str, Any]]:
    rows = conn.execute(
        f"SELECT minute, status, runs FROM {SCHEMA}.runs_by_status WHERE scope = %s AND minute >= %s "
        "ORDER BY minute, status",
        (scope, window.since),
    )
    return [{"minute": _iso(m), "status": s, "runs": n} for m, s, n in rows]


def spend(conn: psycopg.Connection[Any], scope: str, window: Window) -> list[dict[str, Any]]:
    rows = conn.execute(
        f"SELECT tenant_id, hour, cost_micros, events FROM {SCHEMA}.spend WHERE scope = %s AND hour >= %s "
        "ORDER BY hour, tenant_id",
        (scope, window.since),
    )
    return [
        {"tenant_id": t, "hour": _iso(h), "cost_micros": c, "cost_usd": c / 1_000_000, "events": n}
        for t, h, c, n in rows
    ]


def failure_classes(conn: psycopg.Connection[Any], scope: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        f"SELECT failure_class, event, events FROM {SCHEMA}.failure_classes WHERE scope = %s "
        "ORDER BY failure_class, event",
        (scope,),
    )
    return [{"failure_class": c, "event": e, "events": n} for c, e, n in rows]


def deliveries(conn: psycopg.Connection[Any], scope: str) -> dict[str, int]:
    row = conn.execute(
        f"SELECT delivered, duplicates, undecodable FROM {SCHEMA}.deliveries WHERE scope = %s", (scope,)
    ).fetchone()
    delivered, duplicates, undecodable = row if row else (0, 0, 0)
    return {"delivered": delivered, "duplicates": duplicates, "undecodable": undecodable}
