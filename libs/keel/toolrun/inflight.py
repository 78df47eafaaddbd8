"""Which idempotency keys have an attempt in flight in this adapter instance: at most one at a time."""

from __future__ import annotations

import threading


class KeyGate:
    """A set of keys under a lock. `enter` claims a key for one attempt and says False when another
    attempt holds it: two attempts of one key in parallel would defeat a check-then-act lookup (two "not
    found" answers, two writes) and draw a 409 from a Stripe-like provider."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: set[str] = set()

    def enter(self, key: str) -> bool:
        with self._lock:
            if key in self._held:
                return False
            self._held.add(key)
            return True

    def leave(self, key: str) -> None:
        with self._lock:
            self._held.discard(key)

    def held(self, key: str) -> bool:
        with self._lock:
            return key in self._held
