"""Retention of ended runs (pure): a small marker while a repeated run_id must stay a no-op, then nothing.

`keel.run-events` keeps every fact of a run; the scheduler's state only has to answer "did this run_id
already run?". An ended run shrinks to a marker at once, and the marker is tombstoned from the changelog
(and memory) once it is older than the retention horizon. A run request older than the horizon is
refused: past it, a missing marker cannot tell a new run from a re-published old request.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from keel.contracts import RunRequested
from services.scheduler.state import TERMINAL, RunState


def marker(state: RunState, now_ms: int) -> RunState:
    """What is kept of an ended run: who, which workflow, how it ended and when."""
    return RunState(
        run_id=state.run_id,
        tenant_id=state.tenant_id,
        workflow=state.workflow,
        workflow_version=state.workflow_version,
        partition=state.partition,
        input={},
        status=state.status,
        ended_at=state.ended_at if state.ended_at is not None else now_ms,
    )


def is_marker(state: RunState) -> bool:
    return state.status in TERMINAL and not state.steps and not state.input and state.ended_at is not None


def expired_request(req: RunRequested, now_ms: int, horizon_ms: int) -> str | None:
    """Why a run request is too old to be taken, or None."""
    requested_ms = int(req.requested_at.timestamp() * 1000)
    age_ms = now_ms - requested_ms
    if age_ms <= horizon_ms:
        return None
    return (
        f"run request for {req.run_id} was requested {age_ms / 1000:.0f}s ago, beyond the scheduler's "
        f"retention horizon of {horizon_ms / 1000:.0f}s: whether this run already ran can no longer be "
        "told, so it is refused rather than risk a second run (submit it again with a new run_id)"
    )


class Expiry:
    """Ended runs by the time their marker may go, soonest first."""

    def __init__(self, horizon_ms: int) -> None:
        self.horizon_ms = horizon_ms
        self._heap: list[tuple[int, str]] = []

    def rebuild(self, states: Iterable[tuple[str, RunState]]) -> None:
        self._heap = [
            (s.ended_at + self.horizon_ms, k)
            for k, s in states
            if s.status in TERMINAL and s.ended_at is not None
        ]
        heapq.heapify(self._heap)

    def add(self, state: RunState) -> None:
        if state.ended_at is not None:
            heapq.heappush(self._heap, (state.ended_at + self.horizon_ms, state.run_id))

    def due(self, now_ms: int, limit: int) -> list[str]:
        """Pop up to `limit` run ids whose markers may go now. The caller re-checks each against its state
        (an entry can be stale after an aborted batch; `rebuild` then puts things right)."""
        out: list[str] = []
        while self._heap and self._heap[0][0] <= now_ms and len(out) < limit:
            out.append(heapq.heappop(self._heap)[1])
        return out

    def __len__(self) -> int:
        return len(self._heap)
