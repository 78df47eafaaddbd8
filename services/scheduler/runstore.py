"""The scheduler's run states: one changelog store per partition, each holding only the runs it owns.

A store keyed by run_id alone across partitions lets a copy of a run found on another partition's
changelog (written before runs were owned by their run_id's partition) replace the owner's copy at
restore, or a tombstone there remove it: an ended run could come back to life. With one store per
partition, a run is looked up only where it belongs; copies elsewhere are dropped and tombstoned.
Partitions are restored in parallel, each by its own consumer.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields

from keel.settings import Settings
from keel.statestore import ChangelogState
from keel.txloop import Output
from services.scheduler.ownership import owner_partition
from services.scheduler.state import STATE_VERSION, RunState, StepState

log = logging.getLogger(__name__)


class RunStore:
    def __init__(self, settings: Settings, topic: str, partitions: int) -> None:
        self.settings, self.topic, self.partitions = settings, topic, partitions
        self._stores: dict[int, ChangelogState[RunState]] = {}
        self._loaded: set[int] = set()  # restored from the changelog (a store can exist before, in tests)

    def _new_store(self) -> ChangelogState[RunState]:
        return ChangelogState(
            self.settings, self.topic, RunState.to_json, decode_state, group="keel-scheduler-restore"
        )

    def _store(self, run_id: str) -> ChangelogState[RunState] | None:
        return self._stores.get(owner_partition(run_id, self.partitions))

    @property
    def loaded(self) -> set[int]:
        return set(self._loaded)

    def get(self, run_id: str) -> RunState | None:
        store = self._store(run_id)
        return store.get(run_id) if store else None

    def put(self, run_id: str, state: RunState) -> Output:
        """Stage `state` in the run's own partition; returns the changelog write to produce."""
        p = owner_partition(run_id, self.partitions)
        return self._stores.setdefault(p, self._new_store()).put(run_id, state, p)

    def delete(self, run_id: str) -> Output:
        p = owner_partition(run_id, self.partitions)
        return self._stores.setdefault(p, self._new_store()).delete(run_id, p)

    def items(self) -> Iterator[tuple[str, int, RunState]]:
        for store in list(self._stores.values()):
            yield from store.items()

    def commit(self) -> None:
        for store in self._stores.values():
            store.commit()

    def abort(self) -> None:
        for store in self._stores.values():
            store.abort()

    def drop(self, partitions: set[int]) -> None:
        for p in partitions:
            self._stores.pop(p, None)
        self._loaded -= partitions
        for store in self._stores.values():
            store.abort()

    def load(self, partitions: set[int]) -> list[Output]:
        """Restore `partitions`; returns the tombstones of copies of runs found on a foreign partition."""
        new = sorted(partitions - self._loaded)
        if not new:
            return []
        stores = {p: self._new_store() for p in new}
        with ThreadPoolExecutor(len(new), thread_name_prefix="restore") as pool:
            list(pool.map(lambda p: stores[p].load({p}), new))
        tombstones: list[Output] = []
        for p, store in stores.items():
            foreign = [k for k, _, _ in store.items() if owner_partition(k, self.partitions) != p]
            for run_id in foreign:
                tombstones.append(store.delete(run_id, p))
            store.commit()
            if foreign:
                log.warning(
                    "dropped %d run states on partition %d that belong to other partitions "
                    "(a run is owned only on its run_id's partition): %s",
                    len(foreign),
                    p,
                    ", ".join(foreign[:10]),
                )
        self._stores.update(stores)
        self._loaded.update(new)
        return tombstones


_RUN_FIELDS = {f.name for f in fields(RunState)}
_STEP_FIELDS = {f.name for f in fields(StepState)}


def decode_state(data: bytes) -> RunState:
    """A run state from the changelog. Fields this version does not know (written by a newer one, before a
    rollback) are left out rather than failing the whole restore, which would stop every run of the
    partition; fields it needs and cannot find still fail loudly."""
    try:
        return RunState.from_json(data)
    except (TypeError, ValueError) as exc:  # unknown fields, or a version newer than this release
        raw = json.loads(data)
        log.warning("run %s: %s", raw.get("run_id"), exc)
        unknown = (set(raw) - _RUN_FIELDS) | {
            f for s in (raw.get("steps") or {}).values() for f in set(s) - _STEP_FIELDS
        }
        log.warning("run %s: state fields unknown to this version, ignored: %s", raw.get("run_id"), unknown)
        kept = {k: v for k, v in raw.items() if k in _RUN_FIELDS}
        kept["version"] = STATE_VERSION  # read as this release's form: what it cannot know is left out
        kept["steps"] = {
            name: {k: v for k, v in step.items() if k in _STEP_FIELDS}
            for name, step in (raw.get("steps") or {}).items()
        }
        return RunState.from_json(json.dumps(kept).encode())
