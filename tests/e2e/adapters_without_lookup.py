"""A deliberately broken adapters service, for tests only: `crm@1` skips its lookup ("not found" without
asking), so a retry after an unknown outcome writes again. Started by tests/e2e/test_tool_boundary.py in
place of the real adapters, to show the per-effect check catching the duplicate this causes."""

from __future__ import annotations

from keel.service import run_service
from services.adapters import client
from services.adapters.service import TOPICS, make_processor


def _no_lookup(self: client._Call, idempotency_key: str) -> None:
    return None  # the break: never ask the provider whether the effect already happened


if __name__ == "__main__":
    client._Call.lookup = _no_lookup  # type: ignore[method-assign]
    run_service("adapters", TOPICS, make_processor, __doc__ or "")
