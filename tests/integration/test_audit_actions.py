"""The audit trail of the actions off the run log, against the real broker and database: a dead letter
redriven over the API (an operator's key) or with `keel dlq redrive`, a workflow and a tool registered
(an admin's key, `keel workflows apply`). Each is one record on keel.audit, written in the action's own
transaction, and one audit row naming who; a replay of the topic adds nothing; a tenant's key never sees
the rows of no tenant (docs/tenancy.md section 5)."""

from __future__ import annotations

import getpass
import json
import random
import threading
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import apistack
import pytest
from apistack import ACME, Api
from confluent_kafka import Producer
from definitions_topic import definitions_topic
from helpers import make_topics, unique, wait_for
from psycopg import sql
from test_api_tools import definition as tool_definition
from test_api_workflows import definition as workflow_definition
from test_broker_acls import run_request

from keel import auditlog
from keel.contracts import AuditRecord, DeadLetter
from keel.reader import read_topic
from keel.serde import Serde, registry_client
from keel.settings import Settings
from keel.topics import AUDIT, DEAD_LETTER_STATUS, DEAD_LETTERS, RUN_REQUESTS
from keel_ops.cli import main
from keel_ops.cli_workflows import apply_file
from services.api.pool import EVERY_TENANT
from services.projector.service import Projector, connect
from services.projector.store import ProjectionStore

pytestmark = pytest.mark.integration
api = apistack.api  # the fixture
OPS = {"Authorization": "Bearer ops-dev-key"}
ADMIN = {"Authorization": "Bearer admin-dev-key"}


def put_letter(settings: Settings, value: bytes) -> DeadLetter:
    """A dead letter of keel.run-requests (a request for a workflow nobody has: a redrive starts
    nothing), on the real dead-letter topic the API's index reads."""
    offset = random.randrange(10**12, 10**13)  # an id of its own; never read back (not truncated)
    letter = DeadLetter(
        dead_letter_id=f"{RUN_REQUESTS}:0:{offset}",
        source_topic=RUN_REQUESTS,
        source_partition=0,
        source_offset=offset,
        key=b"audit-run",
        value=value,
        reason="held for the audit test",
        error_class="unknown_workflow",
        failed_at=datetime.now(UTC),
    )
    serde = Serde(registry_client(settings.schema_registry_url))
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "enable.idempotence": True})
    producer.produce(DEAD_LETTERS, key=letter.dead_letter_id, value=serde.encode(DEAD_LETTERS, letter))
    assert producer.flush(10) == 0
    return letter


def records_about(settings: Settings, subjects: set[str]) -> list[AuditRecord]:
    """The committed records of keel.audit about `subjects`, in log order."""
    return [r for _, r in positioned_records(settings, subjects)]


def positioned_records(settings: Settings, subjects: set[str]) -> list[tuple[int, AuditRecord]]:
    serde = Serde(registry_client(settings.schema_registry_url))
    found = [(m.offset(), serde.decode(AUDIT, m.value())) for m in read_topic(settings, AUDIT)]
    return [(o, r) for o, r in found if r.subject in subjects]


def project_audit(settings: Settings, schema: str, past: int) -> None:
    """Run a projector of keel.audit (one partition) into `schema` until it has stored a position past
    offset `past` (the topic's end is a transaction marker, never a message: a position stops before it)."""
    projector = Projector(settings, topics=[AUDIT], schema=schema, group_id=unique("audit-projector"))
    thread = threading.Thread(target=projector.run, daemon=True)
    thread.start()
    stored = sql.SQL("SELECT next_offset FROM {} WHERE topic = %s").format(
        sql.Identifier(schema, "projector_offsets")
    )

    def caught_up() -> bool:
        with connect(settings) as conn:
            rows = conn.execute(stored, (AUDIT,)).fetchall()
        return bool(rows) and rows[0][0] > past

    try:
        wait_for(caught_up, timeout=60, what="the projector to reach the end of keel.audit")
    finally:
        projector.stop()
        thread.join(30)


def audit_rows(api: Api, subjects: set[str]) -> list[dict[str, Any]]:
    """The audit rows about `subjects` (by what they say, not by their id: a wrong id shows)."""
    query = sql.SQL(
        "SELECT id, tenant_id, actor, action, run_id, detail FROM {} WHERE detail->>'subject' = ANY(%s)"
    )
    rows = api.conn.execute(query.format(sql.Identifier(api.schema, "audit")), (list(subjects),)).fetchall()
    return [
        dict(zip(("id", "tenant_id", "actor", "action", "run_id", "detail"), r, strict=True)) for r in rows
    ]


def test_api_actions_are_audited_once_each_naming_their_principal(api):
    run_id, request = run_request(api.settings)
    known = put_letter(api.settings, request)  # names its tenant and run
    unknown = put_letter(api.settings, b"not avro")  # names nothing: a row of no tenant
    client = api.client
    for letter in (known, unknown):
        answer = client.post(f"/v1/dead-letters/{letter.dead_letter_id}/redrive", headers=OPS)
        assert answer.status_code == 200, answer.text
    forced = client.post(f"/v1/dead-letters/{unknown.dead_letter_id}/redrive?force=true", headers=OPS)
    assert forced.status_code == 200, forced.text
    workflow, tool = unique("wf").replace("-", "_"), unique("tool").replace("-", "_")
    for path, body in (
        ("/v1/workflows", workflow_definition(workflow)),
        ("/v1/tools", tool_definition(tool)),
    ):
        assert client.post(path, content=body, headers=ADMIN).status_code == 201
        assert client.post(path, content=body, headers=ADMIN).status_code == 200  # unchanged: no action

    subjects = {known.dead_letter_id, unknown.dead_letter_id, f"{workflow}@1", f"{tool}@1"}
    positioned = positioned_records(api.settings, subjects)
    records, last = [r for _, r in positioned], max(o for o, _ in positioned)
    by_subject = {s: [r for r in records if r.subject == s] for s in subjects}
    assert {s: len(rs) for s, rs in by_subject.items()} == {
        known.dead_letter_id: 1,
        unknown.dead_letter_id: 2,  # the forced second redrive is a second record, never a replacement
        f"{workflow}@1": 1,
        f"{tool}@1": 1,
    }

    project_audit(api.settings, api.schema, last)
    ids = {f"action:{r.record_id}" for r in records}
    rows = audit_rows(api, subjects)
    assert len(rows) == len(records)
    seen = Counter(
        (r["action"], r["actor"], r["tenant_id"], r["run_id"], r["detail"]["subject"]) for r in rows
    )
    assert seen == Counter(
        [
            ("dead_letter_redriven", "key:ops-dev", "acme", run_id, known.dead_letter_id),
            ("dead_letter_redriven", "key:ops-dev", None, None, unknown.dead_letter_id),
            ("dead_letter_redriven", "key:ops-dev", None, None, unknown.dead_letter_id),
            ("tool_registered", "key:admin-dev", None, None, f"{tool}@1"),
            ("workflow_registered", "key:admin-dev", None, None, f"{workflow}@1"),
        ]
    )
    redrives = [r["detail"] for r in rows if r["detail"]["subject"] == unknown.dead_letter_id]
    assert sorted(d["forced"] for d in redrives) == [False, True]
    again = next(d for d in redrives if d["forced"])
    assert again["replaced"] == next(d for d in redrives if not d["forced"])["to"] != again["to"]
    registered = next(r["detail"] for r in rows if r["action"] == "workflow_registered")
    assert registered["kind"] == "workflow" and registered["digest"].startswith("sha256:")

    # A replay of the whole topic (the stored offset set back to its start) adds nothing.
    ProjectionStore(api.conn, api.schema).set_offsets({(AUDIT, 0): 0})
    project_audit(api.settings, api.schema, last)
    assert len(audit_rows(api, subjects)) == len(records)
    assert {r["id"] for r in rows} == ids  # action:<record_id>: the same record is the same row

    # A tenant's key sees its tenant's row, never one of no tenant: by the API, and by row-level
    # security alone (a query that names no tenant, on the API's connection for acme).
    for_acme = client.get("/v1/audit", headers=ACME, params={"action": "dead_letter_redriven", "limit": 500})
    assert {r["id"] for r in for_acme.json()["audit"]} & ids == {
        f"action:{r.record_id}" for r in by_subject[known.dead_letter_id]
    }
    for_ops = client.get("/v1/audit", headers=OPS, params={"actor": "key:admin-dev", "limit": 500})
    assert {f"action:{r.record_id}" for r in by_subject[f"{tool}@1"]} <= {
        r["id"] for r in for_ops.json()["audit"]
    }
    everyone = sql.SQL("SELECT id, tenant_id FROM {} WHERE id = ANY(%s)").format(
        sql.Identifier(api.schema, "audit")
    )
    pool = client.app.state.deps.pool
    with pool.connection("acme") as conn:
        mine = conn.execute(everyone, (list(ids),)).fetchall()
    with pool.connection(EVERY_TENANT) as conn:
        all_of_them = conn.execute(everyone, (list(ids),)).fetchall()
    assert [r["tenant_id"] for r in mine] == ["acme"]
    assert len(all_of_them) == len(ids) and sum(r["tenant_id"] is None for r in all_of_them) == 4


def test_the_operator_tooling_records_its_local_operator(stack, tmp_path, capsys):
    letter = put_letter(stack, b"not avro")
    assert main(["dlq", "redrive", letter.dead_letter_id]) == 0
    me = f"cli:{getpass.getuser()}"
    [rec] = records_about(stack, {letter.dead_letter_id})
    assert (rec.actor, rec.action, rec.tenant_id) == (me, "dead_letter_redriven", None)
    statuses = [m for m in read_topic(stack, DEAD_LETTER_STATUS) if m.key() == letter.dead_letter_id.encode()]
    assert json.loads(statuses[-1].value())["by"] == me
    assert json.loads(rec.detail_json or "{}")["to"] == json.loads(statuses[-1].value())["to"]

    name = unique("wf").replace("-", "_")
    path = tmp_path / f"{name}.yaml"
    path.write_text(workflow_definition(name))
    assert apply_file(stack, str(path), topic=definitions_topic(stack))
    [registered] = records_about(stack, {f"{name}@1"})
    assert (registered.actor, registered.action) == (me, "workflow_registered")


def test_an_action_that_fails_midway_leaves_neither_its_message_nor_its_record(stack):
    """What a crash between the action and its record would leave: the transaction is aborted, so a
    read_committed reader sees neither (a committed one sees both: the tests above)."""
    topic, subject = unique("test.action-target"), unique("subject")
    make_topics(stack, topic)
    with pytest.raises(RuntimeError, match="midway"), auditlog.action(stack) as act:
        act.send(topic, b"the action", key=subject)
        act.audit(auditlog.record(auditlog.DEAD_LETTER_REDRIVEN, "key:ops-dev", subject))
        raise RuntimeError("the process dies midway")
    assert read_topic(stack, topic) == []
    assert records_about(stack, {subject}) == []
