"""Session fixtures: the real broker, registry and database, whichever way this machine can have them.

Order: explicit environment (KEEL_KAFKA_BOOTSTRAP / KEEL_SCHEMA_REGISTRY_URL / DATABASE_URL) ->
testcontainers when a Docker engine answers -> the native broker and embedded PostgreSQL, started
here under var/test and stopped at the end. Under CI=true a broker that cannot be had is a failure.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from keel.schemas import REPO_ROOT

# The tests run the API with the development keys, which only KEEL_ENV=dev accepts (docs/tenancy.md).
os.environ.setdefault("KEEL_ENV", "dev")

TEST_DATA = REPO_ROOT / "var" / "test"
NATIVE_KAFKA = "127.0.0.1:19092"
NATIVE_REGISTRY = "http://127.0.0.1:18081"


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


def _kafka(stack: ExitStack, settings_env: dict[str, str]) -> None:
    if os.environ.get("KEEL_KAFKA_BOOTSTRAP"):
        settings_env["KEEL_KAFKA_BOOTSTRAP"] = os.environ["KEEL_KAFKA_BOOTSTRAP"]
        return
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer

        container = stack.enter_context(KafkaContainer("apache/kafka:4.3.1"))
        settings_env["KEEL_KAFKA_BOOTSTRAP"] = container.get_bootstrap_server()
        return
    from keel.settings import Settings
    from keel_ops.stack import apply_acl_table, kafka, local_operator

    settings = Settings(kafka_bootstrap=NATIVE_KAFKA, data_dir=TEST_DATA)
    shutil.rmtree(TEST_DATA / "kafka", ignore_errors=True)  # each session starts from an empty log
    kafka(settings, "start")
    stack.callback(kafka, settings, "stop", False)
    # As `keel up` does: the broker enforces the ACL table (keel.acl); the tests' own clients use the
    # loopback admin door, every service and the API started for them connects as its own principal.
    operator = local_operator(settings)
    apply_acl_table(operator)
    settings_env["KEEL_KAFKA_BOOTSTRAP"] = operator.kafka_bootstrap
    settings_env["KEEL_KAFKA_SERVICE_BOOTSTRAP"] = str(operator.kafka_service_bootstrap)


def _database(stack: ExitStack, settings_env: dict[str, str]) -> None:
    if os.environ.get("DATABASE_URL"):
        return
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer

        pg = stack.enter_context(PostgresContainer("pgvector/pgvector:pg18", driver=None))
        settings_env["DATABASE_URL"] = pg.get_connection_url()
        return
    from keel import db
    from keel.settings import Settings

    settings = Settings(data_dir=TEST_DATA)
    shutil.rmtree(db.embedded_dir(settings), ignore_errors=True)
    settings_env["DATABASE_URL"] = db.database_url(settings)
    stack.callback(db.stop_embedded, settings)


def _registry(stack: ExitStack, settings_env: dict[str, str]) -> None:
    if os.environ.get("KEEL_SCHEMA_REGISTRY_URL"):
        settings_env["KEEL_SCHEMA_REGISTRY_URL"] = os.environ["KEEL_SCHEMA_REGISTRY_URL"]
        return
    from keel.settings import Settings
    from keel_ops.stack import registry_process, start_background, stop_background

    settings = Settings(data_dir=TEST_DATA, schema_registry_url=NATIVE_REGISTRY)
    stop_background(settings, "registry")  # a leftover from an interrupted session
    start_background(settings, registry_process(settings))
    stack.callback(stop_background, settings, "registry")
    settings_env["KEEL_SCHEMA_REGISTRY_URL"] = NATIVE_REGISTRY


@pytest.fixture(scope="session")
def stack() -> Iterator[object]:
    """Settings pointing at a running broker, registry and database, with topics and schemas in place."""
    from confluent_kafka.admin import AdminClient

    from keel.serde import register_contracts, registry_client
    from keel.settings import Settings
    from keel.topics import catalogue, ensure_topics

    env: dict[str, str] = {"KEEL_DATA_DIR": str(TEST_DATA)}
    TEST_DATA.mkdir(parents=True, exist_ok=True)
    with ExitStack() as es:
        try:
            _kafka(es, env)
            os.environ.update(env)  # the registry and child processes inherit it
            _registry(es, env)
            _database(es, env)
        except Exception as exc:
            if os.environ.get("CI") == "true":
                raise
            pytest.skip(f"no broker/database available: {exc}")
        os.environ.update(env)
        settings = Settings()
        ensure_topics(AdminClient({"bootstrap.servers": settings.kafka_bootstrap}), catalogue(settings))
        register_contracts(registry_client(settings.schema_registry_url))
        yield settings


# The whole stack as processes, for tests/e2e and tests/chaos (started lazily, once per session).
from harness import events, keel, sims  # noqa: E402, F401
