"""The broker enforces the ACL table (keel.acl, docs/tenancy.md section 2): a process holding one service's
credentials can touch only that service's topics. Runs against the tests' own broker (tests/conftest.py),
which authenticates every service and allows nothing an ACL does not grant."""

from __future__ import annotations

import dataclasses
import os
from datetime import UTC, datetime
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient
from helpers import unique, wait_for

from keel import dlq
from keel.acl import Grant, all_bindings, grant_of
from keel.acl_apply import apply_acls, principal_env
from keel.contracts import DeadLetter, RunRequested
from keel.producer import client_config
from keel.serde import Serde, registry_client
from keel.settings import Settings
from keel.topics import AUDIT, LEDGER, RUN_REQUESTS, TOOL_COMMANDS

pytestmark = pytest.mark.integration


@pytest.fixture
def acl_stack(stack: Settings) -> Settings:
    if not stack.kafka_service_bootstrap:
        if os.environ.get("CI") == "true":
            pytest.fail("the test broker does not enforce ACLs (no KEEL_KAFKA_SERVICE_BOOTSTRAP)")
        pytest.skip("the broker at KEEL_KAFKA_BOOTSTRAP does not enforce ACLs (a shared stack)")
    return stack


def settings_as(stack: Settings, principal: str) -> Settings:
    """The settings of a process started as `principal`, as the operator tooling starts it."""
    env = principal_env(stack, principal, str(stack.kafka_service_bootstrap))
    return stack.model_copy(
        update={
            "kafka_bootstrap": env["KEEL_KAFKA_BOOTSTRAP"],
            "kafka_security_protocol": env["KEEL_KAFKA_SECURITY_PROTOCOL"],
            "kafka_sasl_mechanism": env["KEEL_KAFKA_SASL_MECHANISM"],
            "kafka_username": env["KEEL_KAFKA_USERNAME"],
            "kafka_password": env["KEEL_KAFKA_PASSWORD"],
        }
    )


def as_principal(stack: Settings, principal: str, **extra: Any) -> dict[str, Any]:
    """Client settings of a process started as `principal`: what keel.producer makes of its settings."""
    return client_config(settings_as(stack, principal), **extra)


def produce_as(stack: Settings, principal: str, topic: str, value: bytes, key: str) -> KafkaError | None:
    """Produce one message as `principal`; the delivery error, or None when the broker took it."""
    producer = Producer(as_principal(stack, principal, **{"message.timeout.ms": 10000, "retries": 0}))
    reports: list[KafkaError | None] = []
    producer.produce(topic, key=key, value=value, on_delivery=lambda err, _msg: reports.append(err))
    producer.flush(15)
    assert reports, f"no delivery report for {topic} as {principal}"
    return reports[0]


def read_error_as(stack: Settings, principal: str, topic: str) -> KafkaError | None:
    """Subscribe to `topic` as `principal` (in a group of its own under the principal's group prefix) and
    read from the beginning: the first error the broker answers with, or None once a message or the end
    of a partition came without one."""
    group = f"{grant_of(principal).groups[0]}-acl-{unique('probe')}"
    conf = {"group.id": group, "enable.partition.eof": True, "auto.offset.reset": "earliest"}
    consumer = Consumer(as_principal(stack, principal, **conf))
    seen: list[KafkaError | None] = []
    try:
        consumer.subscribe([topic])

        def answered() -> bool:
            msg = consumer.poll(0.5)
            if msg is not None:
                err = msg.error()
                seen.append(None if err is None or err.code() == KafkaError._PARTITION_EOF else err)
            return bool(seen)

        wait_for(answered, 30, f"an answer to reading {topic} as {principal}")
        return seen[0]
    finally:
        consumer.close()


def run_request(stack: Settings) -> tuple[str, bytes]:
    run_id = unique("acl-run")
    req = RunRequested(
        request_id=unique("req"),
        run_id=run_id,
        tenant_id="acme",
        workflow=unique("no_such_workflow"),  # dead-lettered as unknown: starts nothing
        input_json="{}",
        requested_at=datetime.now(UTC),
    )
    return run_id, Serde(registry_client(stack.schema_registry_url)).encode(RUN_REQUESTS, req)


def test_the_api_credentials_cannot_produce_a_tool_command_nor_read_the_ledger(acl_stack):
    run_id, value = run_request(acl_stack)
    # What the API is for: a run request goes through.
    assert produce_as(acl_stack, "api", RUN_REQUESTS, value, run_id) is None
    # A tool command it has no business writing is refused by the broker.
    refused = produce_as(acl_stack, "api", TOOL_COMMANDS, b"forged tool command", run_id)
    assert refused is not None and refused.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, refused
    # And the commit ledger is not its to read.
    denied = read_error_as(acl_stack, "api", LEDGER)
    assert denied is not None and denied.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, denied


def test_only_the_ledger_reads_and_writes_the_ledger_topic_among_executor_and_ledger(acl_stack):
    # The executor makes tool commands but can never forge a commit.
    refused = produce_as(acl_stack, "executor", LEDGER, b"forged commit", unique("k"))
    assert refused is not None and refused.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, refused
    # The ledger may read its topic (writes are transactional: not probed with a stray record here).
    assert read_error_as(acl_stack, "ledger", LEDGER) is None


def test_a_worker_reads_its_groups_topics_but_never_the_adapters_tool_commands(acl_stack):
    denied = read_error_as(acl_stack, "worker", TOOL_COMMANDS)
    assert denied is not None and denied.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, denied


def test_wrong_credentials_are_refused(acl_stack):
    conf = as_principal(acl_stack, "api", **{"sasl.password": "not-the-password", "message.timeout.ms": 3000})
    producer = Producer(conf)
    reports: list[KafkaError | None] = []
    producer.produce(RUN_REQUESTS, key=b"k", value=b"v", on_delivery=lambda err, _m: reports.append(err))
    producer.flush(10)
    assert reports and reports[0] is not None  # never delivered


def test_the_api_redrives_only_onto_topics_it_may_write_and_says_so_for_the_others(acl_stack):
    """A dead letter of keel.tool-commands redriven with the API's credentials is refused by the broker:
    RedriveRefused (the API's 403), not an unexplained failure; one of keel.run-requests goes back."""
    api = settings_as(acl_stack, "api")

    def letter(topic: str) -> DeadLetter:
        return DeadLetter(
            dead_letter_id=unique("dl"),
            source_topic=topic,
            source_partition=0,
            source_offset=0,
            key=b"run-x",
            value=b"not avro",
            reason="undecodable",
            error_class="undecodable",
            failed_at=datetime.now(UTC),
        )

    with pytest.raises(dlq.RedriveRefused) as refused:
        dlq.redrive(api, letter(TOOL_COMMANDS), "key:ops-dev")
    assert TOOL_COMMANDS in str(refused.value) and "keel dlq redrive" in str(refused.value)
    # Its transaction (the message, its status, its record on keel.audit) is one the API may commit.
    assert dlq.redrive(api, letter(RUN_REQUESTS), "key:ops-dev")["to"].startswith(f"{RUN_REQUESTS}:0:")


def test_the_projector_reads_the_audit_topic_that_only_the_api_writes(acl_stack):
    assert read_error_as(acl_stack, "projector", AUDIT) is None
    refused = produce_as(acl_stack, "projector", AUDIT, b"forged audit record", unique("k"))
    assert refused is not None and refused.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, refused
    denied = read_error_as(acl_stack, "api", AUDIT)
    assert denied is not None and denied.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, denied


def test_applying_the_table_adds_what_is_missing_and_removes_what_it_no_longer_grants(acl_stack):
    """keel acl --apply makes a principal's ACLs exactly its row: a second apply changes nothing, a
    narrower row deletes the grants it dropped (a throwaway principal: the real rows stay as they are)."""
    admin = AdminClient(client_config(acl_stack))  # the tests' operator: the broker's super user
    probe = Grant(unique("probe"), reads=(RUN_REQUESTS,), writes=(RUN_REQUESTS,))
    created, deleted = apply_acls(admin, (probe,))
    assert created > 0 and deleted == 0
    assert apply_acls(admin, (probe,)) == (0, 0)
    narrower = dataclasses.replace(probe, writes=())
    assert apply_acls(admin, (narrower,)) == (0, created - len(all_bindings((narrower,))))
    nothing = dataclasses.replace(probe, reads=(), writes=())  # and no ACL of it is left behind
    assert apply_acls(admin, (nothing,)) == (0, len(all_bindings((narrower,))))
