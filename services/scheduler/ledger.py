"""Fair dispatch, the tenants' side: attempts in flight per tenant and the tenants' queues of held
attempts, over the runs this scheduler instance owns. An index, like the timers: never written anywhere,
rebuilt from the run states after a restore, a rebalance or an aborted batch (each held attempt's
`queued_at` gives the queue order back), so nothing is lost or counted twice on a crash. Pure.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator

from services.scheduler.fair import FairPolicy, Footprint, Held, footprint
from services.scheduler.state import RunState

# A queue entry: (queued_at, run_id, step, call); the first of a tenant's queue goes out first.
Entry = tuple[int, str, str, str]


class Ledger:
    def __init__(self, policy: FairPolicy) -> None:
        self.policy = policy
        self._runs: dict[str, Footprint] = {}
        self._inflight: dict[str, int] = {}
        self._queues: dict[str, list[Entry]] = {}  # heaps; stale entries are skipped when met

    # -- the index -----------------------------------------------------------------------------------
    def rebuild(self, states: Iterable[tuple[str, RunState]]) -> None:
        self._runs, self._inflight, self._queues = {}, {}, {}
        for run_id, state in states:
            self.update(run_id, state)

    def update(self, run_id: str, state: RunState | None) -> None:
        """The run's state as it now stands (None: gone)."""
        old, new = self._runs.pop(run_id, None), footprint(state)
        if old is not None:
            self._inflight[old.tenant] = self._inflight.get(old.tenant, 0) - old.inflight
        if new is None:
            return
        if new.inflight or new.held:
            self._runs[run_id] = new
        self._inflight[new.tenant] = self._inflight.get(new.tenant, 0) + new.inflight
        known = set(old.held) if old is not None else set()
        queue = self._queues.setdefault(new.tenant, [])
        for held in new.held:
            if held not in known:
                heapq.heappush(queue, (held[0], run_id, held[1], held[2]))

    # -- reading it ----------------------------------------------------------------------------------
    def inflight(self, tenant: str) -> int:
        return self._inflight.get(tenant, 0)

    def of(self, run_id: str) -> Footprint | None:
        return self._runs.get(run_id)

    def room(self, run_id: str, state: RunState | None, fresh: int) -> int | None:
        """How many of the `fresh` attempts a decision just issued for the run may go now (None: all), given
        its state after the core: the tenant's limit less what is in flight on its other runs and what this
        run keeps in flight besides them."""
        if state is None:
            return None
        limit = self.policy.limit(state.tenant_id)
        if limit is None:
            return None
        old, new = self._runs.get(run_id), footprint(state)
        others = self.inflight(state.tenant_id) - (old.inflight if old is not None else 0)
        kept = (new.inflight if new is not None else 0) - fresh
        return max(0, limit - others - kept)

    def queued(self, tenant: str) -> int:
        """Held attempts of the tenant that are still held (for tests and figures)."""
        return sum(1 for e in self._queues.get(tenant, []) if self._valid(e))

    def _valid(self, entry: Entry) -> bool:
        queued_at, run_id, step, call = entry
        found = self._runs.get(run_id)
        return found is not None and (queued_at, step, call) in found.held

    def free(self, tenant: str) -> int:
        limit = self.policy.limit(tenant)
        if limit is None:
            return len(self._queues.get(tenant, []))
        return max(0, limit - self.inflight(tenant))

    def next_held(self, tenant: str) -> tuple[str, Held] | None:
        """The tenant's oldest held attempt, taken off its queue (the caller releases it)."""
        queue = self._queues.get(tenant, [])
        while queue:
            entry = heapq.heappop(queue)
            if self._valid(entry):
                queued_at, run_id, step, call = entry
                return run_id, (queued_at, step, call)
        return None

    def waiting_tenants(self) -> list[str]:
        """Tenants with a free slot and something held, in weighted round-robin order: each round gives a
        tenant as many places as its weight (see `rounds`)."""
        waiting = [t for t, q in self._queues.items() if q and self.free(t) > 0]
        return sorted(waiting)

    def rounds(self, tenants: list[str]) -> Iterator[str]:
        """Weighted round-robin over `tenants`: per round, each tenant `weight` times, in turn. The caller
        stops asking for a tenant once it has nothing more to release (it answers False to `send`)."""
        live = list(tenants)
        while live:
            for tenant in list(live):
                for _ in range(self.policy.weight(tenant)):
                    if self.free(tenant) <= 0 or not self._queues.get(tenant):
                        live.remove(tenant)
                        break
                    yield tenant
