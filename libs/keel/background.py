"""Calls to the outside world made off the transactional loop's thread, their outputs handed back by tick().

A processor stages a call while handling its message; the call starts only once the batch that recorded
it (and the message's offset) has committed, runs on a worker thread for as long as it takes, and its
outputs go back to the loop through `take()` in `tick()`, committing in a later, short transaction. So a
slow provider never holds a transaction open, never stalls the loop, and a restarted process never makes
a call twice (the message is not redelivered once its batch committed).

Hooks, in the loop's terms (`keel.txloop.Processor`):
- handle  -> `stage(partition, work)`: held until the batch commits;
- on_commit -> `committed()`: staged work starts; outputs handed out by the last `take()` are durable;
- on_abort  -> `aborted()`: staged work is dropped (the batch is redelivered); handed-out outputs are
  taken back, to be handed out again;
- on_revoke -> `drop(partitions)`: work not yet started for those partitions is dropped (whoever waits
  for its result times out and retries it); work already running finishes and its outputs are published.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence

from confluent_kafka import TopicPartition

from keel.txloop import Output, Processor

log = logging.getLogger(__name__)
Work = Callable[[], Sequence[Output]]
Partition = tuple[str, int]  # (topic, partition) of the message the work came from


class BackgroundCalls:
    def __init__(self, workers: int, name: str = "call") -> None:
        self._cond = threading.Condition()
        self._staged: list[tuple[Partition, Work]] = []  # loop thread only
        self._queue: deque[tuple[Partition, Work]] = deque()
        self._finished: list[Output] = []
        self._handed: list[Output] = []  # loop thread only
        self._running = 0
        self._stopped = False
        # Daemon threads: a process that exits must not wait for a provider; the lost call's deadline
        # retries it.
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    # -- the loop's side ----------------------------------------------------------------------------
    def stage(self, partition: Partition, work: Work) -> None:
        self._staged.append((partition, work))

    def committed(self) -> None:
        self._handed.clear()
        if not self._staged:
            return
        with self._cond:
            self._queue.extend(self._staged)
            self._cond.notify_all()
        self._staged.clear()

    def aborted(self) -> None:
        self._staged.clear()
        if self._handed:
            with self._cond:
                self._finished[:0] = self._handed
            self._handed.clear()

    def drop(self, partitions: Iterable[Partition]) -> int:
        gone = set(partitions)
        self._staged = [s for s in self._staged if s[0] not in gone]
        with self._cond:
            kept = deque(q for q in self._queue if q[0] not in gone)
            dropped = len(self._queue) - len(kept)
            self._queue = kept
        if dropped:
            log.info("dropped %d calls not yet started for revoked partitions", dropped)
        return dropped

    def take(self) -> list[Output]:
        """Outputs of finished calls; they count as handed out until `committed()` or `aborted()`."""
        with self._cond:
            taken, self._finished = self._finished, []
        self._handed.extend(taken)
        return taken

    def busy(self) -> bool:
        """Whether calls are queued, running, or finished and not yet taken."""
        with self._cond:
            return bool(self._queue or self._running or self._finished)

    def pending(self) -> int:
        """Calls queued or running (for tests and metrics)."""
        with self._cond:
            return len(self._queue) + self._running

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._queue.clear()
            self._cond.notify_all()

    # -- the workers' side --------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                _, work = self._queue.popleft()
                self._running += 1
            try:
                outputs = list(work())
            except Exception:  # its result is lost; the waiting side's deadline retries it
                log.exception("background call failed")
                outputs = []
            with self._cond:
                self._running -= 1
                self._finished.extend(outputs)


class BackgroundProcessor(Processor):
    """A processor whose calls run as BackgroundCalls (`self.calls`): the loop's hooks, written once."""

    calls: BackgroundCalls

    def max_wait_s(self, idle_wait_s: float) -> float:
        # A result that lands while the loop waits for messages would wait with it.
        return min(idle_wait_s, 0.005) if self.calls.busy() else idle_wait_s

    def tick(self, now_ms: int) -> Sequence[Output]:
        return self.calls.take()  # finished calls' facts, committed in this turn's transaction

    def on_commit(self) -> None:
        self.calls.committed()

    def on_abort(self) -> None:
        self.calls.aborted()

    def on_revoke(self, partitions: list[TopicPartition]) -> None:
        # Calls not yet started belong to the partitions' new owner: their deadlines retry them.
        self.calls.drop((tp.topic, tp.partition or 0) for tp in partitions)
