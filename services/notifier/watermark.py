"""Which offset each partition may commit: up to the oldest notification not settled yet (pure).

A partition's messages are read in order but settle out of order (tenants' endpoints answer at their
own pace). Committing the next offset to read would lose a notification still being retried when the
process dies; so the commit position is the oldest unsettled offset, or the next to read when none is.
Messages that notify nobody settle when read. Not thread-safe: the shell holds a lock around it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TP = tuple[str, int]


@dataclass
class _Partition:
    generation: int
    next_offset: int  # one past the last message read (where reading started, before any)
    pending: set[int] = field(default_factory=set)
    committed: int | None = None  # the last position committed (or found committed) for it


class Watermarks:
    def __init__(self) -> None:
        self._parts: dict[TP, _Partition] = {}
        self._generations = 0

    def assign(self, tp: TP, start: int, committed: int | None) -> int:
        """Own `tp` from `start` on (`committed`: the group's committed offset, None when it has none, so
        `start` is committed next). Returns its generation, which its notifications carry, so a settle
        from before a revoke (and a re-assign) never moves the new ownership's position."""
        self._generations += 1
        self._parts[tp] = _Partition(self._generations, next_offset=start, committed=committed)
        return self._generations

    def revoke(self, tp: TP) -> None:
        self._parts.pop(tp, None)

    def owns(self, tp: TP, generation: int) -> bool:
        part = self._parts.get(tp)
        return part is not None and part.generation == generation

    def generation(self, tp: TP) -> int | None:
        part = self._parts.get(tp)
        return part.generation if part is not None else None

    def read(self, tp: TP, offset: int, pending: bool) -> None:
        """Message `offset` was read; `pending`: it carries a notification that is not settled yet."""
        part = self._parts.get(tp)
        if part is None:
            return
        part.next_offset = max(part.next_offset, offset + 1)
        if pending:
            part.pending.add(offset)

    def settle(self, tp: TP, offset: int, generation: int) -> None:
        """The notification at `offset` was delivered or given up (recorded)."""
        if self.owns(tp, generation):
            self._parts[tp].pending.discard(offset)

    def position(self, tp: TP) -> int | None:
        """Where a restart must resume `tp`: the oldest unsettled offset, else the next to read."""
        part = self._parts.get(tp)
        if part is None:
            return None
        if part.pending:
            return min(part.pending)
        return part.next_offset

    def to_commit(self) -> dict[TP, int]:
        """Positions that moved past what was last committed."""
        out = {}
        for tp, part in self._parts.items():
            pos = self.position(tp)
            if pos is not None and (part.committed is None or pos > part.committed):
                out[tp] = pos
        return out

    def committed(self, positions: dict[TP, int]) -> None:
        for tp, pos in positions.items():
            part = self._parts.get(tp)
            if part is not None:
                part.committed = pos if part.committed is None else max(part.committed, pos)

    def pending(self) -> int:
        return sum(len(p.pending) for p in self._parts.values())
