"""Applies projections to one Postgres schema: rows and the projector's offsets in one transaction."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from services.projector.core import (
    Projection,
    RowChange,
    error_projection,
    guard_tenants,
    run_tenants,
)
from services.projector.tables import TABLES, Merge, Policy, Status, Table

log = logging.getLogger(__name__)
TP = tuple[str, int]  # (topic, partition)
# A position nobody stored: it never matches, so the next batch re-reads the stored offsets and seeks.
UNKNOWN = -1
Offsets = dict[TP, int | None]  # None: nothing stored yet, start from the beginning


class _Moved(Exception):
    """The stored offsets are not where this writer expected them: someone else wrote, or a swap."""


class ProjectionStore:
    def __init__(self, conn: psycopg.Connection[Any], schema: str = "keel") -> None:
        self.conn, self.schema = conn, schema
        # Rendered once: psycopg would compose a `sql.Composed` into bytes again on every execute (about
        # a third of the projector's CPU), while a plain query string's conversion is cached.
        self._sql: dict[tuple[str, tuple[str, ...]], str] = {}

    def _t(self, table: str) -> sql.Identifier:
        return sql.Identifier(self.schema, table)

    def stored_offsets(self, tps: Iterable[TP]) -> Offsets:
        tps = sorted(set(tps))
        rows = self.conn.execute(
            sql.SQL(
                'SELECT o.topic, o."partition", o.next_offset FROM {} o JOIN unnest(%s::text[], '
                '%s::int[]) AS w(topic, p) ON o.topic = w.topic AND o."partition" = w.p'
            ).format(self._t("projector_offsets")),
            ([t for t, _ in tps], [p for _, p in tps]),
        ).fetchall()
        found = {(t, p): o for t, p, o in rows}
        return {tp: found.get(tp) for tp in tps}

    def write(self, projections: Sequence[Projection], expected: Mapping[TP, int | None]) -> Offsets:
        """Apply `projections` (log order) and move the offsets past them in one transaction, provided
        the stored offsets still equal `expected`; else write nothing. Returns the offsets now stored
        for every partition of `expected`: the batch's ends when it was written."""
        try:
            return self._write(projections, expected)
        except psycopg.OperationalError:
            raise  # the database is away or the transaction lost a race: the caller retries
        except psycopg.Error as exc:  # some row Postgres refuses: find it, keep it as an error, go on
            log.warning("batch of %d refused (%s): storing it message by message", len(projections), exc)
            return self._one_by_one(projections, expected)

    def _one_by_one(self, projections: Sequence[Projection], expected: Mapping[TP, int | None]) -> Offsets:
        now, diverged = dict(expected), set()
        for p in projections:
            tp = (p.at.topic, p.at.partition)
            if tp in diverged:  # the stored offsets moved: nothing after them may be written
                continue
            try:
                moved = self._write([p], {tp: now[tp]})
            except psycopg.OperationalError:
                raise
            except psycopg.Error as exc:
                reason = f"cannot be stored: {type(exc).__name__}: {exc}"
                moved = self._write([error_projection(p.at, reason, "unstorable", None, None)], {tp: now[tp]})
            now[tp] = moved[tp]
            if moved[tp] != p.at.offset + 1:
                diverged.add(tp)
        return now

    def _write(self, projections: Sequence[Projection], expected: Mapping[TP, int | None]) -> Offsets:
        ends = {(p.at.topic, p.at.partition): p.at.offset + 1 for p in projections}
        try:
            with self.conn.transaction():
                # The offsets first, always: a swap locks this table before dropping anything, so the
                # two can never deadlock, and a writer whose offsets moved changes nothing.
                stored = self._lock_offsets(expected)
                if any(stored[tp] != expected[tp] for tp in expected):
                    raise _Moved
                fresh = guard_tenants(self._unseen(projections), self._recorded_tenants(projections))
                with self.conn.pipeline(), self.conn.cursor() as cur:
                    for p in fresh:
                        for change in p.changes:
                            cur.execute(self._upsert(change), self._params(change))
                self._save_offsets(stored, ends)
        except _Moved:
            return self.stored_offsets(expected)
        return {tp: ends.get(tp, expected[tp]) for tp in expected}

    def _lock_offsets(self, tps: Iterable[TP]) -> Offsets:
        tps = sorted(tps)  # one lock order for every writer
        rows = self.conn.execute(
            sql.SQL(
                'SELECT o.topic, o."partition", o.next_offset FROM {} o JOIN unnest(%s::text[], '
                '%s::int[]) AS w(topic, p) ON o.topic = w.topic AND o."partition" = w.p '
                "ORDER BY 1, 2 FOR UPDATE OF o"
            ).format(self._t("projector_offsets")),
            ([t for t, _ in tps], [p for _, p in tps]),
        ).fetchall()
        found = {(t, p): o for t, p, o in rows}
        return {tp: found.get(tp) for tp in tps}

    def _save_offsets(self, stored: Offsets, ends: Mapping[TP, int]) -> None:
        table = self._t("projector_offsets")
        for (topic, partition), end in ends.items():
            if stored[(topic, partition)] is None:
                # Nothing was there to lock: a concurrent first writer shows up as a conflict here.
                cur = self.conn.execute(
                    sql.SQL(
                        'INSERT INTO {} (topic, "partition", next_offset) VALUES (%s, %s, %s) '
                        "ON CONFLICT DO NOTHING"
                    ).format(table),
                    (topic, partition, end),
                )
                if cur.rowcount != 1:
                    raise _Moved
            else:
                self.conn.execute(
                    sql.SQL('UPDATE {} SET next_offset = %s WHERE topic = %s AND "partition" = %s').format(
                        table
                    ),
                    (end, topic, partition),
                )

    def set_offsets(self, offsets: Mapping[TP, int]) -> None:
        """Store these positions outright (a finished rebuild: the high watermarks it read up to)."""
        with self.conn.transaction():
            for (topic, partition), end in offsets.items():
                self.conn.execute(
                    sql.SQL(
                        'INSERT INTO {} (topic, "partition", next_offset) VALUES (%s, %s, %s) ON '
                        'CONFLICT (topic, "partition") DO UPDATE SET next_offset = EXCLUDED.next_offset'
                    ).format(self._t("projector_offsets")),
                    (topic, partition, end),
                )

    def _recorded_tenants(self, projections: Sequence[Projection]) -> dict[str, str]:
        """The stored tenant of each run these projections write (core.guard_tenants checks against it)."""
        runs = sorted(run_tenants(projections))
        if not runs:
            return {}
        query = sql.SQL("SELECT run_id, tenant_id FROM {} WHERE run_id = ANY(%s)").format(self._t("runs"))
        return {row[0]: row[1] for row in self.conn.execute(query, (runs,))}

    def _unseen(self, projections: Sequence[Projection]) -> list[Projection]:
        """Drop facts already projected (an at-least-once copy of an event has the same event_id)."""
        ids = [p.event_id for p in projections if p.event_id is not None]
        query = sql.SQL("SELECT event_id FROM {} WHERE event_id = ANY(%s)").format(self._t("events"))
        seen = {row[0] for row in self.conn.execute(query, (ids,))} if ids else set()
        fresh = []
        for p in projections:
            if p.event_id is not None:
                if p.event_id in seen:
                    continue
                seen.add(p.event_id)
            fresh.append(p)
        return fresh

    def _params(self, change: RowChange) -> list[Any]:
        json_cols = TABLES[change.table].json
        return [Jsonb(v) if c in json_cols and v is not None else v for c, v in change.values.items()]

    def _upsert(self, change: RowChange) -> str:
        key = (change.table, tuple(change.values))
        if key not in self._sql:
            self._sql[key] = upsert_sql(self.schema, TABLES[change.table], key[1]).as_string(self.conn)
        return self._sql[key]


def upsert_sql(schema: str, table: Table, columns: tuple[str, ...]) -> sql.Composed:
    updates = [
        sql.SQL("{} = {}").format(sql.Identifier(c), _merge(c, table.merge[c]))
        for c in columns
        if c in table.merge
    ]
    action = sql.SQL("DO UPDATE SET ") + sql.SQL(", ").join(updates) if updates else sql.SQL("DO NOTHING")
    return sql.SQL("INSERT INTO {} AS t ({}) VALUES ({}) ON CONFLICT ({}) {}").format(
        sql.Identifier(schema, table.name),
        sql.SQL(", ").join(map(sql.Identifier, columns)),
        sql.SQL(", ").join(sql.Placeholder() * len(columns)),
        sql.SQL(", ").join(map(sql.Identifier, table.key)),
        action,
    )


_MERGES = {
    Merge.NEW: "COALESCE(EXCLUDED.{c}, t.{c})",
    Merge.FIRST: "COALESCE(t.{c}, EXCLUDED.{c})",
    Merge.ADD: "t.{c} + EXCLUDED.{c}",
    Merge.MAX: "GREATEST(t.{c}, EXCLUDED.{c})",
    Merge.MIN: "LEAST(t.{c}, EXCLUDED.{c})",
}


def _merge(column: str, policy: Policy) -> sql.Composable:
    c = sql.Identifier(column)
    if isinstance(policy, Merge):
        return sql.SQL(_MERGES[policy]).format(c=c)
    assert isinstance(policy, Status)
    new, old = sql.SQL("EXCLUDED.{}").format(c), sql.SQL("t.{}").format(c)
    parts: list[sql.Composable] = [sql.SQL("CASE")]
    if policy.final:
        finals = sql.SQL(", ").join(map(sql.Literal, sorted(policy.final)))
        parts.append(sql.SQL(" WHEN {} IN ({}) THEN {}").format(old, finals, old))
    if policy.rank:
        parts.append(sql.SQL(" WHEN {} < {} THEN {}").format(_rank(new, policy), _rank(old, policy), old))
    parts.append(sql.SQL(" ELSE {} END").format(new))
    return sql.Composed(parts)


def _rank(value: sql.Composable, policy: Status) -> sql.Composable:
    whens = sql.SQL(" ").join(
        sql.SQL("WHEN {} THEN {}").format(sql.Literal(k), sql.Literal(v)) for k, v in policy.rank.items()
    )
    return sql.SQL("(CASE {} {} ELSE 0 END)").format(value, whens)
