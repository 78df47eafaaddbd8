"""The ACL table (keel.acl) and the broker ACLs it stands for: pure, no broker."""

from __future__ import annotations

from confluent_kafka.admin import AclOperation, ResourcePatternType, ResourceType

from keel.acl import TABLE, Grant, all_bindings, bindings, grant_of, principal_password, table_lines
from keel.auditlog import TRANSACTIONAL_PREFIX
from keel.settings import Settings
from keel.topics import AUDIT, LEDGER, RUN_KEYED, TOOL_COMMANDS, WORKER_COMMANDS_PREFIX, catalogue


def allowed(principal: str, op: AclOperation, topic: str) -> bool:
    """Whether the table lets `principal` do `op` on `topic`, matched as the broker matches patterns."""
    for b in bindings(grant_of(principal)):
        if b.restype != ResourceType.TOPIC or b.operation != op:
            continue
        if b.resource_pattern_type == ResourcePatternType.LITERAL and b.name == topic:
            return True
        if b.resource_pattern_type == ResourcePatternType.PREFIXED and topic.startswith(b.name):
            return True
    return False


def test_every_service_has_one_row_and_its_own_user():
    names = [g.principal for g in TABLE]
    assert len(names) == len(set(names))
    for name in ("scheduler", "executor", "adapters", "ledger", "budget", "projector", "notifier"):
        assert grant_of(name).user == f"keel-{name}"
    assert {"registry", "api", "dashboard", "tracer", "worker"} <= set(names)


def test_the_api_writes_run_requests_but_no_tool_command_and_reads_no_ledger():
    assert allowed("api", AclOperation.WRITE, "keel.run-requests")
    assert not allowed("api", AclOperation.WRITE, TOOL_COMMANDS)
    assert not allowed("api", AclOperation.WRITE, WORKER_COMMANDS_PREFIX + "payments")
    assert not allowed("api", AclOperation.READ, LEDGER)


def test_only_the_ledger_writes_the_ledger():
    assert [g.principal for g in TABLE if allowed(g.principal, AclOperation.WRITE, LEDGER)] == ["ledger"]


def test_worker_topics_are_a_prefix_that_never_matches_the_adapters_topic():
    assert allowed("worker", AclOperation.READ, WORKER_COMMANDS_PREFIX + "payments")
    assert not allowed("worker", AclOperation.READ, TOOL_COMMANDS)
    assert allowed("executor", AclOperation.WRITE, WORKER_COMMANDS_PREFIX + "payments")
    [worker_topics] = [
        b
        for b in bindings(grant_of("worker"))
        if b.operation == AclOperation.READ and b.name == WORKER_COMMANDS_PREFIX
    ]
    assert worker_topics.resource_pattern_type == ResourcePatternType.PREFIXED


def test_groups_and_transactional_ids_are_prefixes_of_the_service_name():
    by_type = {(b.restype, b.name) for b in bindings(grant_of("scheduler"))}
    assert (ResourceType.GROUP, "keel-scheduler") in by_type
    assert (ResourceType.TRANSACTIONAL_ID, "keel-scheduler-") in by_type
    assert all(
        b.resource_pattern_type == ResourcePatternType.PREFIXED
        for b in all_bindings()
        if b.restype in (ResourceType.GROUP, ResourceType.TRANSACTIONAL_ID)
    )
    idempotent = [b for b in bindings(grant_of("api")) if b.operation == AclOperation.IDEMPOTENT_WRITE]
    assert [(b.restype, b.name) for b in idempotent] == [(ResourceType.BROKER, "kafka-cluster")]


def test_every_granted_topic_is_in_the_catalogue():
    known = {s.name for s in catalogue(Settings())}
    for grant in TABLE:
        for topic in (*grant.reads, *grant.writes, *grant.creates):
            assert topic in known or topic == WORKER_COMMANDS_PREFIX + "*", (grant.principal, topic)


def test_every_run_keyed_topic_has_a_writer_and_a_reader():
    for topic in RUN_KEYED:
        assert any(allowed(g.principal, AclOperation.WRITE, topic) for g in TABLE), topic
        assert any(allowed(g.principal, AclOperation.READ, topic) for g in TABLE), topic


def test_bindings_are_allow_rules_for_the_rows_user_only():
    row = Grant("probe", reads=("keel.run-events",), groups=("keel-probe",))
    [read, group] = bindings(row)
    assert (read.principal, read.host, read.permission_type.name) == ("User:keel-probe", "*", "ALLOW")
    assert (read.restype, read.name, read.operation) == (
        ResourceType.TOPIC,
        "keel.run-events",
        AclOperation.READ,
    )
    assert (group.restype, group.name) == (ResourceType.GROUP, "keel-probe")


def test_passwords_differ_per_principal_and_seed_and_are_stable():
    a = principal_password("seed", "api")
    assert a == principal_password("seed", "api")
    assert a != principal_password("seed", "executor")
    assert a != principal_password("other", "api")


def test_the_printed_table_names_every_user():
    text = "\n".join(table_lines())
    assert all(f"User:{g.user}" in text for g in TABLE)


def test_the_audit_topic_is_written_by_the_api_in_transactions_of_its_own_and_read_by_the_projector():
    assert [g.principal for g in TABLE if allowed(g.principal, AclOperation.WRITE, AUDIT)] == ["api"]
    assert [g.principal for g in TABLE if allowed(g.principal, AclOperation.READ, AUDIT)] == ["projector"]
    txn = {
        (b.name, b.resource_pattern_type)
        for b in bindings(grant_of("api"))
        if b.restype == ResourceType.TRANSACTIONAL_ID
    }
    assert txn == {(TRANSACTIONAL_PREFIX, ResourcePatternType.PREFIXED)}
