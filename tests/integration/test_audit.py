"""The audit trail against the real broker and database: the projector reads the facts and the control
commands, writes one row per fact or command (a replayed one adds none), a rebuild equals it, and
GET /v1/audit shows each tenant its own rows and an operator everyone's."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import apistack
import psycopg
import pytest
from apistack import ACME, GLOBEX
from confluent_kafka import Producer
from helpers import make_topics, unique, wait_for
from unit.test_projection_core import Story, completed_after_retry, failed

import keel.events as ev
from keel import db
from keel.contracts import ControlCommand, QuarantineDetail, RunDetail, RunEvent
from keel.serde import Serde, register_contracts, registry_client
from keel.settings import Settings
from services.projector.audit import STEP_IO
from services.projector.core import Position, project_command
from services.projector.rebuild import build_into, end_offsets
from services.projector.schema import differences, drop_schema
from services.projector.service import Projector
from services.projector.store import ProjectionStore

pytestmark = pytest.mark.integration
OPS = {"Authorization": "Bearer ops-dev-key"}
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def submitted_by(story: Story, principal: str) -> Story:
    """The story with its `created` fact naming who submitted the run."""
    first = story.events[0]
    assert first.event == ev.CREATED
    story.events[0] = replace(first, run=RunDetail(status="created", requested_by=principal))
    return story


def decided(story: Story, by: str) -> Story:
    q = QuarantineDetail(
        case_id=f"{story.run_id}:crm_upsert:1", reason="held", decision="retry", decided_by=by
    )
    story.add(ev.QUARANTINE_RESOLVED, "crm_upsert", 1, quarantine=q)
    return story


def command(run: Story, action: str, by: str | None, minutes: int) -> ControlCommand:
    return ControlCommand(
        command_id=unique("cmd"),
        run_id=run.run_id,
        tenant_id=run.tenant,
        action=action,
        reason="because",
        issued_by=by,
        issued_at=T0 + timedelta(minutes=minutes),
        args_json='{"decision": "retry"}' if action == "decide" else None,
    )


def expected_rows(events: list[RunEvent], commands: list[ControlCommand]) -> set[tuple[Any, ...]]:
    """The audit the messages call for, from the messages themselves: (id, tenant, actor, action, run)."""
    rows = set()
    for e in events:
        if e.event == ev.CREATED:
            rows.add(
                (e.event_id, e.tenant_id, e.run.requested_by if e.run else None, "run_submitted", e.run_id)
            )
        elif e.event == ev.QUARANTINE_RESOLVED and e.quarantine:
            rows.add((e.event_id, e.tenant_id, e.quarantine.decided_by, "case_decided", e.run_id))
        elif e.event in STEP_IO:
            rows.add((e.event_id, e.tenant_id, f"service:{e.source}", e.event, e.run_id))
    for c in commands:
        rows.add((f"command:{c.command_id}", c.tenant_id, c.issued_by, f"command:{c.action}", c.run_id))
    return rows


def scenario() -> tuple[list[RunEvent], list[ControlCommand]]:
    acme = submitted_by(decided(completed_after_retry(unique("run"), "acme"), "operator:abc"), "key:acme-1")
    globex = submitted_by(failed(unique("run"), "globex"), "token:https://idp#bob")
    commands = [
        command(acme, "pause", "key:acme-1", 1),
        command(acme, "resume", "key:acme-2", 2),
        command(globex, "cancel", "token:https://idp#bob", 3),
        command(acme, "decide", "operator:abc", 4),
        command(globex, "close", None, 5),  # a service's own command: no principal
    ]
    return acme.events + globex.events, commands


@pytest.fixture
def topics(stack: Settings) -> Iterator[tuple[str, str, Serde, psycopg.Connection[Any], str]]:
    facts, control = unique("test.run-events"), unique("test.control")
    make_topics(stack, facts, partitions=2)
    make_topics(stack, control, partitions=2)
    client = registry_client(stack.schema_registry_url)
    envelopes = {facts: "run_event", control: "control_command"}
    register_contracts(client, envelopes)
    schema = f"audit_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(stack.db_url() or "", autocommit=True) as conn:
        db.migrate(conn)
        try:
            yield facts, control, Serde(client, envelopes), conn, schema
        finally:
            for s in (schema, f"{schema}_shadow"):
                drop_schema(conn, s)


def test_the_projector_audits_facts_and_commands_once_and_a_rebuild_equals_it(stack, topics):
    facts, control, serde, conn, schema = topics
    events, commands = scenario()
    producer = Producer({"bootstrap.servers": stack.kafka_bootstrap, "enable.idempotence": True})
    for e in [*events, events[3]]:  # and an at-least-once copy of a fact
        producer.produce(facts, key=e.run_id, value=serde.encode(facts, e))
    for c in [*commands, commands[2]]:  # and a command replayed (the same command id, a later offset)
        producer.produce(control, key=c.run_id, value=serde.encode(control, c))
    assert producer.flush(10) == 0

    projector = Projector(
        stack, topics=[facts, control], schema=schema, group_id=unique("projector"), serde=serde
    )
    thread = threading.Thread(target=projector.run, daemon=True)
    thread.start()
    ends = {tp: end for tp, end in end_offsets(stack, [facts, control]).items() if end > 0}

    def caught_up() -> bool:
        rows = conn.execute(f'SELECT topic, "partition", next_offset FROM "{schema}".projector_offsets')
        return {(t, p): o for t, p, o in rows} == ends

    try:
        wait_for(caught_up, timeout=60, what="the projector to reach the end of both topics")
    finally:
        projector.stop()
        thread.join(30)
    rows = conn.execute(
        f'SELECT id, tenant_id, actor, action, run_id, source, detail FROM "{schema}".audit'
    ).fetchall()
    assert {r[:5] for r in rows} == expected_rows(events, commands)
    assert len(rows) == len(expected_rows(events, commands))  # no second row for a replayed message
    by_id = {r[0]: r for r in rows}
    replayed = by_id[f"command:{commands[2].command_id}"]
    assert replayed[5].startswith(f"{control}:")  # where it was read; the first copy is kept
    decide = by_id[f"command:{commands[3].command_id}"][6]
    assert decide == {
        "command_id": commands[3].command_id,
        "reason": "because",
        "args": {"decision": "retry"},
    }
    committed = [r[6] for r in rows if r[3] == ev.STEP_COMMITTED and r[6].get("provider_id")]
    assert committed and all(d["idempotency_key"].startswith("acme|") for d in committed)

    build_into(stack, [facts, control], f"{schema}_shadow", ends, serde=serde)
    assert differences(conn, schema, f"{schema}_shadow") == {}


@pytest.fixture
def api(stack: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[apistack.Api]:
    monkeypatch.delenv("KEEL_API_KEYS", raising=False)
    monkeypatch.delenv("KEEL_OPERATOR_KEYS", raising=False)
    yield from apistack.open_api(stack)


def project_scenario(api: apistack.Api) -> tuple[list[RunEvent], list[ControlCommand]]:
    events, commands = scenario()
    api.project(events)
    topic = unique("control")
    projections = [project_command(c, Position(topic, 0, i)) for i, c in enumerate(commands)]
    ProjectionStore(api.conn, api.schema).write(projections, {(topic, 0): None})
    return events, commands


def listed(api: apistack.Api, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    answer = api.client.get("/v1/audit", headers=headers, params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()["audit"]  # type: ignore[no-any-return]


def test_get_audit_shows_a_tenant_its_own_rows_and_an_operator_everyones(api):
    events, commands = project_scenario(api)
    ours = {e.run_id for e in events}
    want = {r for r in expected_rows(events, commands)}
    seen = {
        (r["id"], r["tenant_id"], r["actor"], r["action"], r["run_id"]) for r in listed(api, OPS, limit=500)
    }
    assert want <= seen
    acme = listed(api, ACME, limit=500)
    assert {r["tenant_id"] for r in acme} == {"acme"}
    assert {
        (r["id"], r["tenant_id"], r["actor"], r["action"], r["run_id"]) for r in acme if r["run_id"] in ours
    } == {w for w in want if w[1] == "acme"}
    assert listed(api, ACME, tenant="globex") == []  # naming another tenant shows nothing
    globex_run = next(e.run_id for e in events if e.tenant_id == "globex")
    assert listed(api, ACME, run_id=globex_run) == []
    assert [r["action"] for r in listed(api, GLOBEX, actor="token:https://idp#bob")] == [
        "run_submitted",
        "command:cancel",
    ]
    assert {r["actor"] for r in listed(api, OPS, action="command:decide")} >= {"operator:abc"}
    since = listed(
        api,
        ACME,
        since=(T0 + timedelta(minutes=1)).isoformat(),
        until=(T0 + timedelta(minutes=3)).isoformat(),
    )
    assert [r["action"] for r in since] == ["command:pause", "command:resume"]
    # Pages: limit 3 at a time, each next_cursor followed, gives the whole list once, in order.
    whole, pages, cursor = listed(api, ACME, limit=500), [], None
    while True:
        params: dict[str, Any] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        body = api.client.get("/v1/audit", headers=ACME, params=params).json()
        pages += body["audit"]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == whole
    assert api.client.get("/v1/audit", headers=ACME, params={"cursor": "nonsense"}).status_code == 400
    assert api.client.get("/v1/audit", headers=ACME, params={"since": "yesterday"}).status_code == 400
    assert api.client.get("/v1/audit").status_code == 401
