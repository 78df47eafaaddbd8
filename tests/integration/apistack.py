"""The API against the real broker and database, for the API's integration tests: a fixture and helpers.

Each test gets its own run-requests topic and projection schema, seeded with three acme runs and one
globex run; the API's own idempotency table lives in the migrated database and is kept by rebuilds.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from definitions_topic import definitions_topic
from fastapi.testclient import TestClient
from helpers import make_topics, read_topic, unique
from unit.test_projection_core import completed_after_retry, failed, fan_out, positioned

from keel import db
from keel.contracts import RunEvent, RunRequested
from keel.serde import Serde, register_contracts, registry_client
from keel.settings import Settings
from services.api.app import create_app
from services.api.config import ApiSettings
from services.projector.schema import create_schema, drop_schema
from services.projector.store import ProjectionStore

ACME = {"Authorization": "Bearer acme-dev-key"}
GLOBEX = {"Authorization": "Bearer globex-dev-key"}
INPUT = {"lead_email": "ada@example.com", "lead_name": "Ada", "product": "Keel"}


@dataclass
class Api:
    client: TestClient
    topic: str
    serde: Serde
    acme_runs: list[str]  # seeded: completed (retry), fan-out, completed; newest last
    globex_run: str
    schema: str
    conn: psycopg.Connection  # autocommit, for seeding and inspecting

    @property
    def settings(self) -> Settings:
        return self.client.app.state.deps.settings  # type: ignore[attr-defined, no-any-return]

    def requests(self, expect: int | None = None) -> list[tuple[str, RunRequested]]:
        msgs = read_topic(self.settings, self.topic, expect=expect)
        return [(m.key().decode(), self.serde.decode(self.topic, m.value())) for m in msgs]

    def project(self, events: list[RunEvent]) -> None:
        """Write runs into the projection as the projector would (the API only reads them)."""
        topic = unique("seed")
        ProjectionStore(self.conn, self.schema).write(positioned(events, topic=topic), {(topic, 0): None})


def open_api(stack: Settings, register: bool = True) -> Iterator[Api]:
    topic, schema = unique("test.run-requests"), f"api_{uuid.uuid4().hex[:10]}"
    make_topics(stack, topic, partitions=3)
    client = registry_client(stack.schema_registry_url)
    if register:
        register_contracts(client, {topic: "run_request"})
    stories = [
        completed_after_retry(unique("run")),
        fan_out(unique("run")),
        completed_after_retry(unique("run")),
    ]
    other = failed(unique("run"), tenant="globex")
    with psycopg.connect(stack.db_url(), autocommit=True) as conn:
        db.migrate(conn)
        create_schema(conn, schema)
        events = [e for s in [*stories, other] for e in s.events]
        ProjectionStore(conn, schema).write(positioned(events, topic="seed"), {("seed", 0): None})
        definitions = definitions_topic(stack)  # registered workflows of this test only
        settings = ApiSettings(
            projection_schema=schema, run_requests_topic=topic, definitions_topic=definitions
        )
        try:
            with TestClient(create_app(stack, settings)) as http:
                yield Api(
                    http,
                    topic,
                    Serde(client, {topic: "run_request"}),
                    [s.run_id for s in stories],
                    other.run_id,
                    schema,
                    conn,
                )
        finally:
            drop_schema(conn, schema)


@pytest.fixture
def api(stack: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    monkeypatch.delenv("KEEL_API_KEYS", raising=False)
    monkeypatch.delenv("KEEL_OPERATOR_KEYS", raising=False)
    yield from open_api(stack)
