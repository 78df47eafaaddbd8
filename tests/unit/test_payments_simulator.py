"""The payments simulator (provider of the example tool refund@1) counts like the others: per key and
per logical effect, whatever its dedup mode."""

from __future__ import annotations

import httpx
import pytest

from infra.simulators.dedup import effect_id
from infra.simulators.runner import running

pytestmark = pytest.mark.timeout(30)
AUTH = {"Authorization": "Bearer sim-payments-token"}
TAGS = {"keel_tenant": "acme", "keel_run": "run-1", "keel_step": "refund"}
REFUND = {"charge_id": "ch_1", "amount_cents": 100, "metadata": TAGS}


def test_refunds_dedup_on_the_key_and_count_by_effect() -> None:
    with running("payments") as url, httpx.Client(base_url=url, trust_env=False) as client:
        first = client.post("/v1/refunds", json=REFUND, headers={**AUTH, "Idempotency-Key": "k1"})
        again = client.post("/v1/refunds", json=REFUND, headers={**AUTH, "Idempotency-Key": "k1"})
        assert first.status_code == 200 and again.json() == first.json()
        assert again.headers["idempotent-replayed"] == "true" and first.json()["refund_id"].startswith("re_")
        found = client.get("/v1/refunds", params={"idempotency_key": "k1"}, headers=AUTH).json()
        assert found["refund_id"] == first.json()["refund_id"]
        client.post("/_mode", json={"dedup": "none"}).raise_for_status()
        client.post("/v1/refunds", json=REFUND, headers={**AUTH, "Idempotency-Key": "k1"})
        stats = client.get("/_stats").json()
        assert stats["by_effect"] == {effect_id("acme", "run-1", "refund"): 2} and stats["by_key"] == {
            "k1": 2
        }
        assert client.post("/v1/refunds", json=REFUND).status_code == 401
