"""Committed idempotency keys kept in memory for a retention horizon, counted from their commit."""

from __future__ import annotations

import threading
from collections import deque

from keel.contracts import LedgerRecord

DEFAULT_HORIZON_S = 7 * 24 * 3600


def committed_ms(record: LedgerRecord) -> int:
    return int(record.committed_at.timestamp() * 1000)


class CommittedKeys:
    """The adapters' memory of committed keys, bounded in time: a key committed longer ago than the
    horizon is forgotten, so memory follows the commit rate, not the age of the deployment.

    Forgetting is safe because this memory only spares the provider a call: a command for a forgotten key
    goes to the provider under the same idempotency key, and the adapter's mode answers it (the provider's
    own dedup for `provider_key`, a lookup for `lookup`); the ledger still never commits the key twice. A
    provider whose own key memory is shorter than the horizon (Stripe keeps keys 24 hours) is why the
    horizon defaults to days. Commands for a key that old only come from a step retried days after its
    commit, or from an operator's redrive.
    """

    def __init__(self, horizon_s: float = DEFAULT_HORIZON_S) -> None:
        self.horizon_ms = int(horizon_s * 1000)
        self._lock = threading.Lock()
        self._records: dict[str, LedgerRecord] = {}
        self._order: deque[tuple[int, str]] = deque()  # (committed ms, key) in arrival order

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)

    def put(self, record: LedgerRecord, now_ms: int) -> None:
        at = committed_ms(record)
        if at <= now_ms - self.horizon_ms:
            return  # already beyond the horizon (e.g. read while restoring): never held
        with self._lock:
            self._records[record.idempotency_key] = record
            self._order.append((at, record.idempotency_key))
            self._evict(now_ms)

    def get(self, key: str, now_ms: int) -> LedgerRecord | None:
        with self._lock:
            self._evict(now_ms)
            return self._records.get(key)

    def _evict(self, now_ms: int) -> None:
        # Ledger records arrive roughly in commit order per partition; one stuck behind a newer one
        # leaves a little later, which only keeps it longer, never shorter.
        cutoff = now_ms - self.horizon_ms
        while self._order and self._order[0][0] <= cutoff:
            at, key = self._order.popleft()
            record = self._records.get(key)
            if record is not None and committed_ms(record) == at:
                del self._records[key]
