"""Which runs are ready to export, and which offset each partition may commit (pure).

A run's events are held until the run ends (completed, failed, canceled), its last event is older than
the idle timeout (a run held for a human), or it holds too many events; then they leave as one batch
for export. A partition's commit position is the first offset of its oldest run still held or being
exported, or the next offset to read when none is: a crash at any moment re-reads every event of every
run not yet exported (at-least-once; the spans' ids are derived, so a re-export repeats the same spans).
A run exported before its end is exported again in pieces: the events that come after form a new
batch. Not thread-safe: one loop owns it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from keel import events as ev
from keel.contracts import RunEvent

TP = tuple[str, int]


@dataclass
class RunBatch:
    """One run's events, from one partition, in log order."""

    tp: TP
    run_id: str
    first_offset: int
    events: list[RunEvent] = field(default_factory=list)
    last_read_s: float = 0.0
    ended: bool = False


@dataclass
class _Partition:
    next_offset: int | None = None  # one past the last message read; None before any
    committed: int | None = None


class RunBuffer:
    def __init__(self, idle_s: float, max_events: int) -> None:
        self.idle_s, self.max_events = idle_s, max_events
        self._parts: dict[TP, _Partition] = {}
        self._held: dict[tuple[TP, str], RunBatch] = {}
        self._exporting: list[RunBatch] = []

    def assign(self, tp: TP) -> None:
        self._parts.setdefault(tp, _Partition())

    def revoke(self, tp: TP) -> None:
        """Forget the partition: its new owner re-reads from the last commit, held runs included."""
        self._parts.pop(tp, None)
        self._held = {k: b for k, b in self._held.items() if b.tp != tp}
        self._exporting = [b for b in self._exporting if b.tp != tp]

    def read(self, tp: TP, offset: int, event: RunEvent | None, now_s: float) -> None:
        """Message `offset` of `tp` was read; `event` is None when it holds no run event to trace."""
        part = self._parts.setdefault(tp, _Partition())
        part.next_offset = offset + 1
        if event is None:
            return
        batch = self._held.setdefault((tp, event.run_id), RunBatch(tp, event.run_id, offset))
        batch.events.append(event)
        batch.last_read_s = now_s
        batch.ended = batch.ended or event.event in ev.TERMINAL

    def ready(self, now_s: float) -> list[RunBatch]:
        """Batches to export now; they hold their partition's position until `settle`d."""
        out = [
            b
            for b in self._held.values()
            if b.ended or now_s - b.last_read_s >= self.idle_s or len(b.events) >= self.max_events
        ]
        for b in out:
            del self._held[(b.tp, b.run_id)]
        self._exporting += out
        return out

    def touch(self, now_s: float) -> None:
        """Restart every held run's idle clock (reading was paused: their quiet says nothing)."""
        for b in self._held.values():
            b.last_read_s = now_s

    def settle(self, batches: list[RunBatch]) -> None:
        """These batches' spans were accepted by the exporter: their offsets may be committed."""
        done = {id(b) for b in batches}
        self._exporting = [b for b in self._exporting if id(b) not in done]

    def held(self) -> int:
        return len(self._held) + len(self._exporting)

    def run_ids(self) -> set[str]:
        """The runs held or being exported."""
        return {b.run_id for b in [*self._held.values(), *self._exporting]}

    def positions(self) -> dict[TP, int]:
        """Per owned partition, the offset to commit, when it moved since the last `committed`."""
        oldest: dict[TP, int] = {}
        for b in [*self._held.values(), *self._exporting]:
            oldest[b.tp] = min(oldest.get(b.tp, b.first_offset), b.first_offset)
        out: dict[TP, int] = {}
        for tp, part in self._parts.items():
            if part.next_offset is None:
                continue
            position = oldest.get(tp, part.next_offset)
            if position != part.committed:
                out[tp] = position
        return out

    def committed(self, positions: dict[TP, int]) -> None:
        for tp, offset in positions.items():
            if tp in self._parts:
                self._parts[tp].committed = offset
