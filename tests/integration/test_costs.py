"""Cost as one query, against the real broker and database: a stream of cost facts with awkward amounts
goes through the projector; GET /v1/costs, grouped every way, must equal the sums of the facts'
cost_micros read back from the log, to the micro-dollar. Tenant keys see their own costs only."""

from __future__ import annotations

import itertools
import random
import socket
import threading
import uuid
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import uvicorn
from confluent_kafka import Producer
from definitions_topic import definitions_topic
from fastapi.testclient import TestClient
from helpers import make_topics, read_topic, unique, wait_for

from keel import db
from keel import events as ev
from keel.contracts import ModelDetail, RunEvent, ToolDetail
from keel.serde import Serde, register_contracts, registry_client
from keel.settings import Settings
from keel_ops.cli import main
from services.api.app import create_app
from services.api.config import ApiSettings
from services.api.cost_query import GROUP_COLUMNS
from services.projector.rebuild import end_offsets
from services.projector.schema import drop_schema
from services.projector.service import Projector

pytestmark = pytest.mark.integration

ACME = {"Authorization": "Bearer acme-dev-key"}
GLOBEX = {"Authorization": "Bearer globex-dev-key"}
OPERATOR = {"Authorization": "Bearer ops-dev-key"}
# Just before a UTC midnight: facts land on two days.
T0 = datetime(2026, 3, 1, 23, 59, 0, tzinfo=UTC)
# Amounts floats cannot add exactly (0.1 + 0.2), one micro-dollar, and sums past 2**53 micro-dollars.
AWKWARD = [1, 3, 100_000, 300_000, 700_000, 999_999, 123_456_789, 2**53 + 1, 10**15 + 7, 0]


def float_usd(micros: int) -> float:
    """The USD figure as float arithmetic gives it (input + output, each a float): 0.1 + 0.2 for 300000
    micro-dollars is 0.30000000000000004, which no rounding turns back into the exact amount."""
    part = micros // 3
    return part / 1_000_000 + (micros - part) / 1_000_000


def cost_facts(rng: random.Random) -> list[RunEvent]:
    facts: list[RunEvent] = []
    for n in range(120):
        tenant = rng.choice(["acme", "globex"])
        run = f"run-{n % 17}-{tenant}"
        kind = rng.choice([ev.MODEL_CALLED, ev.MODEL_CALLED, ev.TOOL_CALLED, ev.STEP_FAILED])
        micros = rng.choice(AWKWARD)
        model = (
            rng.choice(["sim-small", "sim-large", "openai/gpt-4o-mini"]) if kind != ev.TOOL_CALLED else None
        )
        facts.append(
            RunEvent(
                event_id=f"{run}:{n}:{kind}",
                run_id=run,
                task_id=rng.choice(["ticket-1", "ticket-2", None]),
                agent_id=rng.choice(["triage_v1", "writer_v3", None]),
                tenant_id=tenant,
                workflow=rng.choice(["support", "outreach"]),
                workflow_version=1,
                step=rng.choice(["draft", "triage", "send"]),
                event=kind,
                ts=T0 + timedelta(seconds=n),
                attempt=1,
                source="test",
                model=model,
                cost_usd_est=float_usd(micros),
                cost_micros=micros,
                model_call=ModelDetail(provider="p", prompt_tokens=1, completion_tokens=1) if model else None,
                tool=ToolDetail(tool="sms@1") if kind == ev.TOOL_CALLED else None,
            )
        )
    return facts


@pytest.fixture(scope="module")
def projected(stack: Settings) -> Iterator[tuple[TestClient, list[RunEvent]]]:
    """The facts on a topic of their own (one twice: an at-least-once copy), projected by a running
    projector into a schema of their own, and the API reading that schema."""
    topic, schema = unique("test.run-events"), f"costs_{uuid.uuid4().hex[:10]}"
    make_topics(stack, topic, partitions=3)
    client = registry_client(stack.schema_registry_url)
    register_contracts(client, {topic: "run_event"})
    serde = Serde(client, {topic: "run_event"})
    facts = cost_facts(random.Random(12))
    producer = Producer({"bootstrap.servers": stack.kafka_bootstrap, "enable.idempotence": True})
    for fact in [*facts, facts[5]]:
        producer.produce(topic, key=fact.run_id, value=serde.encode(topic, fact))
    assert producer.flush(10) == 0
    with psycopg.connect(stack.db_url(), autocommit=True) as conn:
        db.migrate(conn)
        projector = Projector(stack, topics=[topic], schema=schema, group_id=unique("projector"))
        thread = threading.Thread(target=projector.run, daemon=True)
        thread.start()
        try:

            def caught_up() -> bool:
                ends = {tp: end for tp, end in end_offsets(stack, [topic]).items() if end > 0}
                try:
                    rows = conn.execute(
                        f'SELECT topic, "partition", next_offset FROM "{schema}".projector_offsets'
                    )
                except psycopg.errors.UndefinedTable:
                    return False
                stored = {(t, p): o for t, p, o in rows}
                return all(stored.get(tp) == end for tp, end in ends.items())

            wait_for(caught_up, timeout=60, what="the projector to reach the end of the topic")
        finally:
            projector.stop()
            thread.join(30)
        logged = [serde.decode(topic, m.value()) for m in read_topic(stack, topic)]
        assert len(logged) == len(facts) + 1
        settings = ApiSettings(
            projection_schema=schema,
            run_requests_topic=unique("test.run-requests"),
            definitions_topic=definitions_topic(stack),
        )
        try:
            with TestClient(create_app(stack, settings)) as http:
                yield http, logged
        finally:
            drop_schema(conn, schema)


def _day(fact: RunEvent) -> str:
    return fact.ts.astimezone(UTC).date().isoformat()


VALUE_OF = {
    "tenant": lambda f: f.tenant_id,
    "workflow": lambda f: f.workflow,
    "run": lambda f: f.run_id,
    "step": lambda f: f.step,
    "agent": lambda f: f.agent_id,
    "task": lambda f: f.task_id,
    "model": lambda f: f.model,
    "day": _day,
}


def expected(
    logged: list[RunEvent], group_by: tuple[str, ...], tenant: str | None
) -> dict[tuple[Any, ...], int]:
    """Sums of cost_micros per group, from the log: each fact once (a copy has the same event id)."""
    once = {f.event_id: f for f in logged if f.cost_micros is not None}
    sums: dict[tuple[Any, ...], int] = defaultdict(int)
    for f in once.values():
        if tenant is None or f.tenant_id == tenant:
            sums[tuple(VALUE_OF[g](f) for g in group_by)] += f.cost_micros or 0
    return dict(sums)


def answered(body: dict[str, Any], group_by: tuple[str, ...]) -> dict[tuple[Any, ...], int]:
    got = {}
    for row in body["rows"]:
        assert row["cost_usd"] == f"{row['cost_micros'] // 10**6}.{row['cost_micros'] % 10**6:06d}"
        got[tuple(row[g] for g in group_by)] = row["cost_micros"]
    return got


GROUPINGS = [
    ("tenant",),
    ("tenant", "agent", "task"),
    ("agent", "task", "step"),
    ("workflow", "step", "model"),
    ("day",),
    ("tenant", "agent", "task", "workflow", "step", "model"),
]


@pytest.mark.parametrize("group_by", GROUPINGS, ids=lambda g: ",".join(g))
def test_grouped_sums_equal_the_logs_cost_micros_exactly(projected, group_by: tuple[str, ...]) -> None:
    http, logged = projected
    for headers, tenant in ((OPERATOR, None), (ACME, "acme"), (GLOBEX, "globex")):
        reply = http.get("/v1/costs", params={"group_by": ",".join(group_by)}, headers=headers)
        assert reply.status_code == 200, reply.text
        body = reply.json()
        want = expected(logged, group_by, tenant)
        assert answered(body, group_by) == want
        total = sum(want.values())
        assert body["total"]["cost_micros"] == total and total > 2**53  # past exact binary floats
        assert body["total"]["facts"] == sum(
            1 for _ in {f.event_id for f in logged if tenant in (None, f.tenant_id)}
        )


def test_an_operator_may_name_a_tenant_and_a_window(projected) -> None:
    http, logged = projected
    start, end = T0 + timedelta(seconds=30), T0 + timedelta(seconds=90)
    params = {"group_by": "agent", "tenant": "globex", "from": start.isoformat(), "to": end.isoformat()}
    body = http.get("/v1/costs", params=params, headers=OPERATOR).json()
    window = [f for f in logged if start <= f.ts < end]
    assert answered(body, ("agent",)) == expected(window, ("agent",), "globex")
    days = http.get("/v1/costs", params={"group_by": "day", "from": "2026-03-02"}, headers=OPERATOR).json()
    assert [r["day"] for r in days["rows"]] == ["2026-03-02"]


def test_a_tenant_key_sees_its_own_costs_only(projected) -> None:
    http, _ = projected
    reply = http.get("/v1/costs", params={"tenant": "globex"}, headers=ACME)
    assert reply.status_code == 403 and reply.json()["error"]["code"] == "forbidden"
    assert http.get("/v1/costs", params={"tenant": "acme"}, headers=ACME).status_code == 200
    assert http.get("/v1/costs").status_code == 401
    assert http.get("/v1/costs", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_an_unknown_group_by_column_is_a_clear_422(projected) -> None:
    http, _ = projected
    reply = http.get("/v1/costs", params={"group_by": "tenant,colour"}, headers=ACME)
    assert reply.status_code == 422
    message = reply.json()["error"]["message"]
    assert "colour" in message and all(name in message for name in GROUP_COLUMNS)
    bad_time = http.get("/v1/costs", params={"from": "yesterday"}, headers=ACME)
    assert bad_time.status_code == 422 and "from" in bad_time.json()["error"]["message"]
    empty = http.get("/v1/costs", params={"to": ""}, headers=ACME)  # documented as a date-time
    assert empty.status_code == 422 and "to" in empty.json()["error"]["message"]


def test_every_grouping_column_is_accepted(projected) -> None:
    http, logged = projected
    for group_by in itertools.combinations(GROUP_COLUMNS, 2):
        body = http.get("/v1/costs", params={"group_by": ",".join(group_by)}, headers=OPERATOR).json()
        assert answered(body, group_by) == expected(logged, group_by, None)


@pytest.fixture
def served(projected, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[RunEvent]]:
    """The same app on a real port, for `keel costs`, as an operator."""
    http, logged = projected
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(http.app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, timeout=20, what="the API to listen")
        monkeypatch.setenv("KEEL_API_URL", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("KEEL_API_KEY", "ops-dev-key")
        yield logged
    finally:
        server.should_exit = True
        thread.join(20)


def test_keel_costs_prints_the_grouped_table(served, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["costs", "--group-by", "tenant,model", "--tenant", "acme"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["tenant", "model", "cost_usd", "cost_micros", "facts"]
    printed = {}
    for line in lines[1:-1]:
        tenant, model, usd, micros, _ = line.split()
        assert usd == f"{int(micros) // 10**6}.{int(micros) % 10**6:06d}"
        printed[(tenant, None if model == "-" else model)] = int(micros)
    assert printed == expected(served, ("tenant", "model"), "acme")
    assert lines[-1].split()[0] == "TOTAL" and int(lines[-1].split()[2]) == sum(printed.values())
    assert main(["costs", "--group-by", "colour"]) == 1
    assert "unknown group_by column(s) ['colour']" in capsys.readouterr().err
