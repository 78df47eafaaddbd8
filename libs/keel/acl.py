"""Who may touch what on the broker: one row per principal, the minimum its code needs (docs/tenancy.md §2).

The table is data; `bindings` turns it into the broker's ACLs and `principal_password` gives each
principal its SCRAM password. Applying both to a broker (users, then ACLs) is in keel.acl_apply.

A topic name ending in `*` is a prefix (a PREFIXED ACL): `keel.tool-commands.*` is every worker group's
command topic and never `keel.tool-commands` itself. Groups and transactional ids are always prefixes:
`keel-scheduler` covers the group `keel-scheduler`, its restore group and its members' transactional ids
`keel-scheduler-0`, ...
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBinding,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
)

from keel.auditlog import TRANSACTIONAL_PREFIX as ACTION_TRANSACTIONS
from keel.topics import (
    AUDIT,
    BUDGET_COMMANDS,
    BUDGET_STATE,
    CONTROL,
    DEAD_LETTER_STATUS,
    DEAD_LETTERS,
    DEFINITIONS,
    INSTANCE_LEASES,
    LEDGER,
    RUN_EVENTS,
    RUN_REQUESTS,
    SCHEDULER_STATE,
    SCHEMAS,
    STEP_COMMANDS,
    TOOL_COMMANDS,
    WORKER_COMMANDS_PREFIX,
)

# The principal a service's user name gets: User:keel-<row>.
USER_PREFIX = "keel-"
WORKER_TOPICS = WORKER_COMMANDS_PREFIX + "*"
CLUSTER = "kafka-cluster"


@dataclass(frozen=True)
class Grant:
    """What one principal may do. Every field is the minimum its code needs, named after why."""

    principal: str
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    # Topics it makes when missing (keel.topics.ensure_topics): CREATE, and DESCRIBE_CONFIGS to check limits.
    creates: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    transactional_ids: tuple[str, ...] = ()
    idempotent: bool = False

    @property
    def user(self) -> str:
        return USER_PREFIX + self.principal


# Every instance of a transactional service (keel.service.serve) holds an instance lease (keel.lease):
# it reads and writes the lease topic with a reader group of its own.
_LEASE = {"reads": (INSTANCE_LEASES,), "writes": (INSTANCE_LEASES,), "group": "keel-lease-"}
# Background readers of registered definitions (keel.definitions.reader).
_DEFS_GROUP = "keel-definitions-"


def _serve(
    name: str,
    reads: tuple[str, ...],
    writes: tuple[str, ...],
    groups: tuple[str, ...] = (),
    creates: tuple[str, ...] = (),
    group: str | None = None,
) -> Grant:
    """A service run by keel.service.serve: group `keel-NAME` (+ its restore group), transactional ids
    `keel-NAME-INSTANCE`, dead letters of what it cannot process, an instance lease."""
    own = group or f"keel-{name}"
    return Grant(
        name,
        reads=(*reads, *_LEASE["reads"]),
        writes=(*writes, DEAD_LETTERS, *_LEASE["writes"]),
        creates=creates,
        groups=(own, *groups, str(_LEASE["group"])),
        transactional_ids=(f"{own}-",),
        idempotent=True,
    )


TABLE: tuple[Grant, ...] = (
    # Run state machine. Reroutes a message found on a partition it does not own onto its run's own
    # partition of the same topic (services.scheduler.ownership), hence writes of its input topics.
    _serve(
        "scheduler",
        reads=(RUN_REQUESTS, RUN_EVENTS, CONTROL, SCHEDULER_STATE, DEFINITIONS),
        writes=(RUN_REQUESTS, RUN_EVENTS, CONTROL, STEP_COMMANDS, SCHEDULER_STATE, BUDGET_COMMANDS),
        groups=("keel-end-probe-", _DEFS_GROUP),
    ),
    # Step commands in, tool commands out: to the adapters or to a worker group's topic, which it makes.
    _serve(
        "executor",
        reads=(STEP_COMMANDS,),
        writes=(RUN_EVENTS, TOOL_COMMANDS, WORKER_TOPICS),
        creates=(WORKER_TOPICS,),
    ),
    # Tool commands in, facts out; reads the ledger to spare the provider a second call.
    _serve(
        "adapters",
        reads=(TOOL_COMMANDS, LEDGER, DEFINITIONS),
        writes=(RUN_EVENTS,),
        groups=("keel-ledger-view", _DEFS_GROUP),
    ),
    # The single committer: the only writer of keel.ledger.
    _serve("ledger", reads=(RUN_EVENTS, LEDGER), writes=(RUN_EVENTS, LEDGER)),
    # Budget commands in (keyed by tenant; reroutes like the scheduler), facts and its changelog out.
    _serve(
        "budget",
        reads=(BUDGET_COMMANDS, BUDGET_STATE),
        writes=(BUDGET_COMMANDS, BUDGET_STATE, RUN_EVENTS),
    ),
    # Tool workers (keel.worker SDK): one command topic per worker group, made by the worker if missing.
    _serve(
        "worker",
        reads=(WORKER_TOPICS, LEDGER),
        writes=(RUN_EVENTS,),
        groups=("keel-ledger-view",),
        creates=(WORKER_TOPICS,),
    ),
    # Projections into Postgres; offsets live in the database, the group is for lag and membership.
    # keel.control and keel.audit feed the audit trail (every command, every other action, with who).
    Grant("projector", reads=(RUN_EVENTS, CONTROL, AUDIT), groups=("keel.projector", "keel.ends-")),
    Grant(
        "notifier",
        reads=(RUN_EVENTS,),
        writes=(DEAD_LETTERS,),
        groups=("keel-notifier",),
        idempotent=True,
    ),
    Grant("tracer", reads=(RUN_EVENTS,), groups=("keel-tracer",)),
    Grant("dashboard", reads=(RUN_EVENTS,), groups=("keel.dashboard",)),
    # The schema registry keeps its schemas in a compacted topic it makes at start.
    Grant(
        "registry",
        reads=(SCHEMAS,),
        writes=(SCHEMAS,),
        creates=(SCHEMAS,),
        groups=("keel-registry",),
        idempotent=True,
    ),
    # The HTTP API: run requests and control commands; registered definitions; dead letters (listed,
    # inspected, and redriven to their source topic when that is one the API writes anyway: run requests
    # and control). A redrive onto any other topic (events, step or tool commands) is refused by the
    # broker and stays with the operator tooling (`keel dlq redrive`, the admin principal). A redrive and
    # a registration are each one transaction (keel.auditlog) with their record on keel.audit.
    Grant(
        "api",
        reads=(DEAD_LETTERS, DEAD_LETTER_STATUS, DEFINITIONS, RUN_REQUESTS, CONTROL),
        writes=(RUN_REQUESTS, CONTROL, DEFINITIONS, DEAD_LETTER_STATUS, AUDIT),
        groups=("keel-api-dlq-", "keel-reader-", "keel-dlq-", _DEFS_GROUP),
        transactional_ids=(ACTION_TRANSACTIONS,),
        idempotent=True,
    ),
)


def grant_of(principal: str) -> Grant:
    for grant in TABLE:
        if grant.principal == principal:
            return grant
    raise KeyError(f"no principal {principal!r} in the ACL table; known: {[g.principal for g in TABLE]}")


def _topic(name: str) -> tuple[str, ResourcePatternType]:
    if name.endswith("*"):
        return name[:-1], ResourcePatternType.PREFIXED
    return name, ResourcePatternType.LITERAL


def _allow(
    user: str, rtype: ResourceType, name: str, pattern: ResourcePatternType, op: AclOperation
) -> AclBinding:
    return AclBinding(rtype, name, pattern, f"User:{user}", "*", op, AclPermissionType.ALLOW)


def bindings(grant: Grant) -> list[AclBinding]:
    """The ACLs one row stands for. READ and WRITE imply DESCRIBE on the broker, so none is listed."""
    u, out = grant.user, []
    for ops, topics in (
        ((AclOperation.READ,), grant.reads),
        ((AclOperation.WRITE,), grant.writes),
        ((AclOperation.CREATE, AclOperation.DESCRIBE_CONFIGS), grant.creates),
    ):
        for topic in topics:
            name, pattern = _topic(topic)
            out += [_allow(u, ResourceType.TOPIC, name, pattern, op) for op in ops]
    out += [
        _allow(u, ResourceType.GROUP, g, ResourcePatternType.PREFIXED, AclOperation.READ)
        for g in grant.groups
    ]
    out += [
        _allow(u, ResourceType.TRANSACTIONAL_ID, t, ResourcePatternType.PREFIXED, AclOperation.WRITE)
        for t in grant.transactional_ids
    ]
    if grant.idempotent:
        out.append(
            _allow(
                u, ResourceType.BROKER, CLUSTER, ResourcePatternType.LITERAL, AclOperation.IDEMPOTENT_WRITE
            )
        )
    return out


def all_bindings(table: tuple[Grant, ...] = TABLE) -> list[AclBinding]:
    return [b for grant in table for b in bindings(grant)]


def principal_password(seed: str, principal: str) -> str:
    """A principal's SCRAM password, derived from one secret (KEEL_KAFKA_CREDENTIAL_SEED): whoever holds
    the seed (the operator tooling) can hand each process its own password, and no process can derive
    another's from its own."""
    return hmac.new(seed.encode(), f"kafka:{principal}".encode(), hashlib.sha256).hexdigest()[:40]


def table_lines(table: tuple[Grant, ...] = TABLE) -> list[str]:
    """The table as `keel acl` prints it."""
    lines = []
    for g in table:
        lines.append(f"User:{g.user}")
        for label, values in (
            ("reads", g.reads),
            ("writes", g.writes),
            ("creates", g.creates),
            ("groups", tuple(v + "*" for v in g.groups)),
            ("transactional ids", tuple(v + "*" for v in g.transactional_ids)),
        ):
            if values:
                lines.append(f"  {label:<18} {', '.join(values)}")
        if g.idempotent:
            lines.append(f"  {'idempotent write':<18} yes")
    return lines
