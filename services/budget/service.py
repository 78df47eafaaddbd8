"""Budget enforcer shell: budget commands in; answers on keel.run-events and the tenant's state on its
changelog out, with the consumed offsets, in one transaction.

- Ownership: a tenant is decided only on its tenant_id's partition (Kafka's murmur2, as every Keel
  producer places keys). A command found on another partition is re-routed there in the same
  transaction, never decided where it landed: two owners of one tenant could together pass a limit.
- Restore: on assignment the tenants of the assigned partitions are read back from the changelog before
  any command is handled (keel.statestore waits out the previous owner's last transaction).
- Lapses: a tick releases reservations past their expires_at, for a bounded number of tenants per turn;
  a tenant with a lapse due is also expired before its next command is decided.
- Malformed commands (undecodable, unknown action, negative amounts, no reservation id) are
  dead-lettered with the reason; the loop goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from confluent_kafka import TopicPartition

import keel.events as ev
from keel.contracts import BudgetCommand, RunEvent
from keel.partitioner import partition_for
from keel.serde import Serde
from keel.settings import Settings
from keel.txloop import Output, Processor, Record, Reject
from services.budget.config import BudgetSettings, BudgetTopics
from services.budget.core import Invalid, decide, expire, next_due
from services.budget.state import TenantBudgets
from services.budget.store import TenantStore

TOPICS = [BudgetTopics().commands]
GROUP = "keel-budget"  # the group run_service gives this service
REROUTED_FROM = "keel-rerouted-from"  # where a re-routed command was first published: topic:partition:offset
log = logging.getLogger(__name__)


class BudgetProcessor(Processor):
    def __init__(
        self, settings: Settings, *, topics: BudgetTopics | None = None, config: BudgetSettings | None = None
    ) -> None:
        self.topics = topics or BudgetTopics()
        self.config = config or BudgetSettings()
        self.limits = self.config.limits()
        self.partitions = settings.topic_partitions
        self.tenants = TenantStore(settings, self.topics.state, group=f"{GROUP}-restore")
        self.due: dict[str, int] = {}  # tenant -> when `expire` next has work (ms); rebuilt from the state

    # -- partitions ---------------------------------------------------------------------------------
    def on_assign(self, partitions: list[TopicPartition]) -> None:
        self.tenants.load({tp.partition for tp in partitions})
        self._reindex()

    def on_revoke(self, partitions: list[TopicPartition]) -> None:
        self.tenants.drop({tp.partition for tp in partitions})
        self._reindex()

    def on_abort(self) -> None:
        self.tenants.abort()
        self._reindex()  # lapses released in the aborted turn are due again

    def on_commit(self) -> None:
        self.tenants.commit()

    def _reindex(self) -> None:
        self.due = {k: t for k, s in self.tenants.items() if (t := next_due(s)) is not None}

    # -- commands ------------------------------------------------------------------------------------
    def handle(self, record: Record) -> Sequence[Output]:
        cmd = record.value
        if not isinstance(cmd, BudgetCommand):
            raise Reject(f"not a budget command: {type(cmd).__name__}", "invalid")
        if not cmd.tenant_id:
            raise Reject("a budget command needs a tenant_id", "invalid")
        owner = partition_for(cmd.tenant_id, self.partitions)
        if record.partition != owner:
            log.info(
                "re-routing command %s of tenant %s to partition %d", cmd.command_id, cmd.tenant_id, owner
            )
            origin = f"{record.topic}:{record.partition}:{record.offset}".encode()
            return [Output(record.topic, cmd.tenant_id, cmd, [(REROUTED_FROM, origin)], owner)]
        now = ev.now_ms()
        before = self.tenants.get(cmd.tenant_id)
        state, facts = before, list[RunEvent]()
        if state is not None and self.due.get(cmd.tenant_id, now + 1) <= now:
            state, facts = expire(state, now)  # lapsed holds leave before they can defer anyone
        try:
            state, answered = decide(state, cmd, now, self.limits)
        except Invalid as exc:
            raise Reject(str(exc), "invalid") from None
        return self._apply(cmd.tenant_id, owner, before, state, facts + answered)

    # -- timers --------------------------------------------------------------------------------------
    def tick(self, now_ms: int) -> Sequence[Output]:
        due = sorted((t, k) for k, t in self.due.items() if t <= now_ms)[: self.config.budget_expire_batch]
        outputs: list[Output] = []
        for _, tenant in due:
            before = self.tenants.get(tenant)
            if before is None:
                self.due.pop(tenant, None)
                continue
            state, facts = expire(before, now_ms)
            outputs += self._apply(tenant, partition_for(tenant, self.partitions), before, state, facts)
        return outputs

    def _apply(
        self,
        tenant: str,
        partition: int,
        before: TenantBudgets | None,
        after: TenantBudgets,
        facts: list[RunEvent],
    ) -> list[Output]:
        outputs = [Output(self.topics.events, f.run_id, f) for f in facts]
        if before is None or after != before:
            outputs += self.tenants.put(tenant, before, after, partition)
        when = next_due(after)
        if when is None:
            self.due.pop(tenant, None)
        else:
            self.due[tenant] = when
        return outputs


def make_processor(settings: Settings, _: Serde) -> BudgetProcessor:
    return BudgetProcessor(settings)
