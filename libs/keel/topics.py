"""The topic catalogue and its creation through the admin client."""

from __future__ import annotations

from dataclasses import dataclass, field

from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from keel.settings import Settings

RUN_REQUESTS = "keel.run-requests"
RUN_EVENTS = "keel.run-events"
STEP_COMMANDS = "keel.step-commands"
TOOL_COMMANDS = "keel.tool-commands"
CONTROL = "keel.control"
LEDGER = "keel.ledger"
DEAD_LETTERS = "keel.dead-letters"
SCHEMAS = "_keel.schemas"
# Registered workflow and tool definitions (Avro, compacted; see keel.definitions).
DEFINITIONS = "keel.definitions"
# Which dead letters were redriven (JSON, compacted, keyed by dead_letter_id).
DEAD_LETTER_STATUS = "keel.dead-letter-status"
# Actions that are neither run facts nor control commands (a dead letter redriven, a definition
# registered), each written with the action itself (Avro, append-only; see keel.auditlog).
AUDIT = "keel.audit"
# Which process holds each instance id (JSON, compacted, keyed by transactional id; see keel.lease).
INSTANCE_LEASES = "keel.instance-leases"
# Internal changelog of the scheduler's run states (JSON, compacted; not a public contract).
SCHEDULER_STATE = "keel.scheduler-state"
# Instructions to the budget enforcer, keyed by tenant_id (Avro; see schemas/budget_command.avsc), and its
# changelog of tenants' budget states (JSON, compacted, keyed by tenant_id; not a public contract).
BUDGET_COMMANDS = "keel.budget-commands"
BUDGET_STATE = "keel.budget-state"

# Topics keyed by run_id must share one partition count so one instance owns a whole run.
RUN_KEYED = (RUN_REQUESTS, RUN_EVENTS, STEP_COMMANDS, TOOL_COMMANDS, CONTROL)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


class TopicMismatch(RuntimeError):
    """An existing topic does not have the partition count the catalogue requires."""


def catalogue(settings: Settings) -> list[TopicSpec]:
    p = settings.topic_partitions
    # Every topic accepts what the producers send (keel.producer uses the same number).
    limit = {"max.message.bytes": str(settings.record_limit())}
    compacted = {"cleanup.policy": "compact", **limit}
    specs = [TopicSpec(name, p, dict(limit)) for name in RUN_KEYED]
    specs += [
        TopicSpec(LEDGER, p, compacted),
        # Ended runs' markers are tombstoned after the retention horizon; the cleaner only compacts rolled
        # segments, so roll hourly and drop tombstones an hour later: a restore then reads live runs (and
        # recent markers), not every run ever, whatever the traffic.
        TopicSpec(
            SCHEDULER_STATE, p, {**compacted, "segment.ms": "3600000", "delete.retention.ms": "3600000"}
        ),
        # Keyed by tenant: one enforcer instance owns all of a tenant's budgets at a time.
        TopicSpec(BUDGET_COMMANDS, p, dict(limit)),
        TopicSpec(BUDGET_STATE, p, {**compacted, "segment.ms": "3600000", "delete.retention.ms": "3600000"}),
        TopicSpec(DEAD_LETTERS, 1, dict(limit)),
        TopicSpec(DEAD_LETTER_STATUS, 1, compacted),
        # Schemas are few and must be read in registration order: one partition.
        TopicSpec(SCHEMAS, 1, compacted),
        # "First in log order wins" needs one log order: one partition (definitions are few and small).
        TopicSpec(DEFINITIONS, 1, compacted),
        # The audit trail's own facts: never compacted (a second redrive of a letter is a second record)
        # and never deleted (a rebuilt audit table must give back every row). Few and small: one partition.
        TopicSpec(AUDIT, 1, {"cleanup.policy": "delete", "retention.ms": "-1", **limit}),
        lease_topic(),
    ]
    return specs


# Tool commands for tools served by a tool worker group (keel.worker): one topic per group, created like
# keel.tool-commands (same partition count, so a run's commands stay co-partitioned with its events).
WORKER_COMMANDS_PREFIX = TOOL_COMMANDS + "."


def worker_commands(group: str) -> str:
    """The command topic of a worker group."""
    return WORKER_COMMANDS_PREFIX + group


def worker_group_id(group: str) -> str:
    """The consumer group of a worker group's workers (the one whose lag says what waits)."""
    return f"keel-worker-{group}"


def worker_topics(settings: Settings, groups: list[str]) -> list[TopicSpec]:
    limit = {"max.message.bytes": str(settings.record_limit())}
    return [
        TopicSpec(worker_commands(g), settings.topic_partitions, dict(limit)) for g in sorted(set(groups))
    ]


def lease_topic() -> TopicSpec:
    """Instance leases (keel.lease): tiny records, renewed every second; short segments so that
    compaction keeps the topic small."""
    return TopicSpec(
        INSTANCE_LEASES,
        1,
        {"cleanup.policy": "compact", "segment.ms": "60000", "min.cleanable.dirty.ratio": "0.1"},
    )


def ensure_topics(
    admin: AdminClient, specs: list[TopicSpec], replication: int = 1, timeout: float = 30.0
) -> list[str]:
    """Create the missing topics; verify the partition count of the existing ones. Returns created names."""
    existing = admin.list_topics(timeout=timeout).topics
    for spec in specs:
        if spec.name in existing and len(existing[spec.name].partitions) != spec.partitions:
            have = len(existing[spec.name].partitions)
            raise TopicMismatch(
                f"topic {spec.name} has {have} partitions, the catalogue says {spec.partitions}"
            )
    raise_limits(admin, [s for s in specs if s.name in existing], timeout)
    missing = [s for s in specs if s.name not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [
            NewTopic(s.name, num_partitions=s.partitions, replication_factor=replication, config=s.config)
            for s in missing
        ],
        operation_timeout=timeout,
    )
    created = []
    for name, fut in futures.items():
        try:
            fut.result(timeout)
            created.append(name)
        except Exception as exc:  # a concurrent creator is fine
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
    return created


def raise_limits(admin: AdminClient, specs: list[TopicSpec], timeout: float = 30.0) -> list[str]:
    """Raise `max.message.bytes` of existing topics that accept less than the catalogue says (topics
    created before the limit was set): the producers send record batches up to that size, and a batch
    the broker refuses fails its transaction on every try. Never lowers a limit. Returns altered names."""
    wanted = {s.name: int(s.config["max.message.bytes"]) for s in specs if "max.message.bytes" in s.config}
    if not wanted:
        return []
    described = admin.describe_configs([ConfigResource(ResourceType.TOPIC, name) for name in wanted])
    altered = []
    for resource, future in described.items():
        entry = future.result(timeout).get("max.message.bytes")
        if entry is not None and int(entry.value) >= wanted[resource.name]:
            continue
        change = ConfigResource(
            ResourceType.TOPIC,
            resource.name,
            incremental_configs=[
                ConfigEntry(
                    "max.message.bytes",
                    str(wanted[resource.name]),
                    incremental_operation=AlterConfigOpType.SET,
                )
            ],
        )
        for fut in admin.incremental_alter_configs([change]).values():
            fut.result(timeout)
        altered.append(resource.name)
    return altered
