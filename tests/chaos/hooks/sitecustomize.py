"""Chaos hooks for service processes, loaded only when this directory is on PYTHONPATH.

`KEEL_CHAOS_HOOKS` is a comma-separated list; each entry patches a module right after it is imported:

- `kill_in_commit=P`   with probability P, SIGKILL the process 0-3 ms into commit_transaction: an
                       ambiguous commit (it may or may not have landed). Each kill is logged first.
- `drop_key`           sabotage: adapters send no Idempotency-Key header.
- `skip_lookup`        sabotage: `lookup` adapters never ask the provider before writing.
- `commit_twice`       sabotage: the ledger writes every commit twice (record and step_committed).

The sabotage entries break a guarantee on purpose, so the chaos verdict can be seen red
(tests/chaos/test_selfcheck.py). None of this is product code: it lives in the tests tree.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

_HOOKS = dict(
    (part.split("=", 1) + [""])[:2] for part in os.environ.get("KEEL_CHAOS_HOOKS", "").split(",") if part
)
_LOG = os.path.join(os.environ.get("KEEL_DATA_DIR", "var"), "logs", "chaos-hooks.log")


def _note(what: str) -> None:
    os.makedirs(os.path.dirname(_LOG), exist_ok=True)
    with open(_LOG, "a") as out:
        out.write(f"{time.time():.3f} {os.getpid()} {' '.join(sys.argv[-3:])} {what}\n")


def _patch_txcalls(module: ModuleType) -> None:
    chance = float(_HOOKS["kill_in_commit"] or "0.02")
    original = module.commit

    def commit(producer: Any, timeout: float) -> None:
        if random.random() < chance:
            _note("kill_in_commit")
            delay = random.uniform(0.0, 0.003)
            threading.Timer(delay, lambda: os.kill(os.getpid(), signal.SIGKILL)).start()
        original(producer, timeout)

    module.commit = commit


def _patch_adapter_base(module: ModuleType) -> None:
    module.Adapter.key_headers = lambda self, key: {}


def _patch_adapter_client(module: ModuleType) -> None:
    for cls in vars(module).values():
        if isinstance(cls, type) and hasattr(cls, "lookup"):
            cls.lookup = lambda self, *args, **kwargs: None


def _patch_ledger_service(module: ModuleType) -> None:
    original: Callable[..., Any] = module.LedgerProcessor.handle

    def handle(self: Any, record: Any) -> Any:
        outputs = list(original(self, record))
        return outputs + outputs  # every commit twice: two ledger records, two step_committed facts

    module.LedgerProcessor.handle = handle


_PATCHES: dict[str, tuple[str, Callable[[ModuleType], None]]] = {
    "kill_in_commit": ("keel.txcalls", _patch_txcalls),
    "drop_key": ("services.adapters.base", _patch_adapter_base),
    "skip_lookup": ("services.adapters.client", _patch_adapter_client),
    "commit_twice": ("services.ledger.service", _patch_ledger_service),
}
_WANTED = {module: patch for name, (module, patch) in _PATCHES.items() if name in _HOOKS}


class _AfterImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself; wraps the real loader of a wanted module to patch it once executed."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        patch = _WANTED.get(fullname)
        if patch is None:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return None
        loader = spec.loader
        exec_module = loader.exec_module

        def patched(module: ModuleType) -> None:
            exec_module(module)
            patch(module)
            _note(f"patched {fullname}")

        loader.exec_module = patched  # type: ignore[method-assign]
        return spec


if _WANTED:  # a patch applies only in processes that import its module
    sys.meta_path.insert(0, _AfterImport())
