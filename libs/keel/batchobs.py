"""What a transactional loop published, seen once its transaction committed: metrics and event logs.

The loop stages every output it encodes (handlers may run on several threads) and every dead letter;
a commit makes them count, anything else (an abort, a rewind, a failed turn) drops them, since the turn
is repeated and would otherwise be counted twice.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from keel.contracts import DeadLetter, RunEvent
from keel.logjson import log_run_event
from keel.metrics import Metrics, metrics
from keel.txtypes import Output


class BatchObserver:
    def __init__(self, service: str, registry: Metrics | None = None) -> None:
        self.service = service
        self._metrics = registry
        self._lock = threading.Lock()
        self._facts: list[RunEvent] = []
        self._letters: list[DeadLetter] = []

    @property
    def metrics(self) -> Metrics:
        return self._metrics or metrics()

    def staged(self, outputs: Sequence[Output]) -> None:
        facts = [o.value for o in outputs if isinstance(o.value, RunEvent)]
        if facts:
            with self._lock:
                self._facts.extend(facts)

    def dead_letter(self, letter: DeadLetter) -> None:
        with self._lock:
            self._letters.append(letter)

    def committed(self) -> None:
        with self._lock:
            facts, letters = self._facts, self._letters
            self._facts, self._letters = [], []
        self.metrics.committed_facts(self.service, facts)
        self.metrics.committed_dead_letters(self.service, letters)
        self.metrics.transactions.labels(self.service).inc()
        for fact in facts:
            log_run_event(fact, self.service)

    def dropped(self) -> None:
        """The turn's outputs were not published (or not yet): forget them."""
        with self._lock:
            self._facts, self._letters = [], []

    def aborted(self) -> None:
        self.dropped()
        self.metrics.aborts.labels(self.service).inc()
