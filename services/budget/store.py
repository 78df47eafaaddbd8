"""The tenants' budget states of the assigned partitions, kept in the compacted changelog.

Each tenant is held whole in memory and written as records (services.budget.state.split): its day scopes
in one, each run's scopes and reservations in another; a change writes only the records it changed and
tombstones the records that left (a forgotten run). Records go to the tenant's own partition, in the
transaction of the answers and offsets. A restore reads the partitions' records back (keel.statestore:
it waits out the previous owner's last transaction) and assembles the tenants.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

from keel.settings import Settings
from keel.statestore import ChangelogState
from keel.txloop import Output
from services.budget.state import TenantBudgets, merge, split


class TenantStore:
    def __init__(self, settings: Settings, topic: str, group: str) -> None:
        self.settings, self.topic, self.group = settings, topic, group
        self._committed: dict[str, tuple[int, TenantBudgets]] = {}  # tenant -> (partition, state)
        self._pending: dict[str, tuple[int, TenantBudgets]] = {}

    def get(self, tenant: str) -> TenantBudgets | None:
        hit = self._pending.get(tenant) or self._committed.get(tenant)
        return None if hit is None else hit[1]

    def put(
        self, tenant: str, before: TenantBudgets | None, after: TenantBudgets, partition: int
    ) -> list[Output]:
        """Stage `after`; returns the changelog writes (changed records, tombstones of gone ones)."""
        self._pending[tenant] = (partition, after)
        old = split(before) if before is not None else {}
        outputs = [
            Output(self.topic, key, part.to_json(), partition=partition)
            for key, part in split(after).items()
            if old.pop(key, None) != part
        ]
        outputs += [Output(self.topic, key, None, partition=partition) for key in old]
        return outputs

    def items(self) -> Iterator[tuple[str, TenantBudgets]]:
        for tenant, (_, state) in {**self._committed, **self._pending}.items():
            yield tenant, state

    def commit(self) -> None:
        self._committed.update(self._pending)
        self._pending.clear()

    def abort(self) -> None:
        self._pending.clear()

    def drop(self, partitions: set[int]) -> None:
        self._pending.clear()
        self._committed = {t: v for t, v in self._committed.items() if v[0] not in partitions}

    def load(self, partitions: set[int]) -> int:
        """Restore the tenants of `partitions`. Returns the tenants restored."""
        records = ChangelogState(
            self.settings, self.topic, TenantBudgets.to_json, TenantBudgets.from_json, self.group
        )
        records.load(partitions)
        parts: dict[str, list[TenantBudgets]] = defaultdict(list)
        where: dict[str, int] = {}
        for _, partition, part in records.items():
            parts[part.tenant_id].append(part)
            where[part.tenant_id] = partition
        for tenant, found in parts.items():
            self._committed[tenant] = (where[tenant], merge(tenant, found))
        return len(parts)
