"""The helpdesk simulator: a refund provider without Idempotency-Key support, and its two tool definitions
served by Keel's generic HTTP adapter against it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from infra.simulators.dedup import effect_id
from infra.simulators.helpdesk import create_app
from infra.simulators.runner import running
from keel.schemas import REPO_ROOT
from keel.tooldefs import load_definition
from services.adapters import AdapterSettings, call_tool
from services.adapters.base import Effect, ToolRequest
from services.adapters.http_tool import HttpToolAdapter

AUTH = {"Authorization": "Bearer sim-helpdesk-token"}
TAGS = {"keel_tenant": "acme", "keel_run": "run-1", "keel_step": "triage", "keel_call": "turn-2.call-0"}
REFUND = {"charge_id": "ch_abc123", "amount_cents": 1999, "reason": "duplicate", "metadata": TAGS}


@pytest.fixture(scope="module")
def helpdesk_url() -> Iterator[str]:
    with running("helpdesk") as url:
        yield url


@pytest.fixture
def helpdesk(helpdesk_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=helpdesk_url, headers=AUTH, trust_env=False, timeout=10) as client:
        client.post("/_reset").raise_for_status()
        yield client


def stats(client: httpx.Client) -> dict[str, Any]:
    result: dict[str, Any] = client.get("/_stats").json()
    return result


def test_a_customer_is_derived_from_the_email_alone_and_reading_is_no_delivery(
    helpdesk: httpx.Client,
) -> None:
    first = helpdesk.get("/v1/customers", params={"email": "ada.lovelace@example.com"}).json()
    again = helpdesk.get("/v1/customers", params={"email": "ada.lovelace@example.com"}).json()
    assert first == again and first["email"] == "ada.lovelace@example.com" and first["name"] == "Ada Lovelace"
    assert first["customer_id"].startswith("cus_") and first["charge_id"].startswith("ch_")
    other = helpdesk.get("/v1/customers", params={"email": "grace@example.com"}).json()
    assert other["customer_id"] != first["customer_id"] and other["charge_id"] != first["charge_id"]
    assert helpdesk.get("/v1/customers", params={"email": "not-an-email"}).status_code == 404
    assert stats(helpdesk)["deliveries"] == 0 and stats(helpdesk)["requests"] == 4


def test_it_never_deduplicates_and_the_lookup_finds_the_first_refund(helpdesk: httpx.Client) -> None:
    headers = {"X-Client-Reference": "acme|wf|run-1|triage|refund_charge@1|sha256:1", "Idempotency-Key": "k"}
    answers = [helpdesk.post("/v1/refunds", json=REFUND, headers=headers) for _ in range(2)]
    assert [a.status_code for a in answers] == [200, 200]
    first, second = (a.json() for a in answers)
    assert first["refund_id"] != second["refund_id"] and first["status"] == "succeeded"
    assert first["customer_id"] == "cus_abc123"  # the customer of the charge, as the lookup names it
    assert all("idempotency-key" not in a.headers for a in answers)  # it has no such header to echo
    seen = stats(helpdesk)
    assert seen["deliveries"] == 2 and seen["replays"] == 0 and seen["dedup"] == "none"
    assert seen["by_effect"] == {effect_id("acme", "run-1", "triage", "turn-2.call-0"): 2}
    found = helpdesk.get("/v1/refunds", params={"client_reference": headers["X-Client-Reference"]})
    assert found.status_code == 200 and found.json()["refund_id"] == first["refund_id"]
    assert found.json()["client_reference"] == headers["X-Client-Reference"]
    assert helpdesk.get("/v1/refunds", params={"client_reference": "other"}).status_code == 404
    assert helpdesk.get(f"/v1/refunds/{second['refund_id']}").json()["amount_cents"] == 1999


def test_no_mode_makes_it_deduplicate_or_refuse_in_flight(
    helpdesk: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    for mode in ("key", "stripe"):
        assert helpdesk.post("/_mode", json={"dedup": mode}).status_code == 422
    assert helpdesk.get("/_mode").json() == {"dedup": "none"}
    monkeypatch.setenv("KEEL_SIM_HELPDESK_DEDUP", "key")
    with pytest.raises(ValueError, match="supports dedup modes"):
        create_app()


def test_base_faults_apply_to_refunds(helpdesk: httpx.Client) -> None:
    helpdesk.post(
        "/_faults", json=[{"kind": "accept_then_error"}, {"kind": "null_field", "field": "refund_id"}]
    )
    lost = helpdesk.post("/v1/refunds", json=REFUND, headers={"X-Client-Reference": "r1"})
    assert lost.status_code == 500 and stats(helpdesk)["deliveries"] == 1  # made, then not said
    assert helpdesk.get("/v1/refunds", params={"client_reference": "r1"}).status_code == 200
    drifted = helpdesk.post("/v1/refunds", json=REFUND, headers={"X-Client-Reference": "r2"})
    assert drifted.status_code == 200 and drifted.json()["refund_id"] is None


# -- the tool definitions, served by the generic HTTP adapter against the simulator ------------------


def _call(tool: str, url: str, payload: dict[str, Any], key: str, call: str = "turn-1.call-0") -> Any:
    adapter = HttpToolAdapter(load_definition(REPO_ROOT / "tools" / tool))
    settings = AdapterSettings(
        tool_urls={"helpdesk": url},
        tool_credentials={"*": {"helpdesk": SecretStr("sim-helpdesk-token")}},
        tool_timeout_s=0.5,
    )
    request = ToolRequest(payload, key, Effect("acme", "run-1", "triage", call))
    with httpx.Client(trust_env=False) as http:
        return call_tool(adapter, request, settings, http)


def test_lookup_customer_reads_the_customer(helpdesk: httpx.Client, helpdesk_url: str) -> None:
    result = _call("lookup_customer.v1.yaml", helpdesk_url, {"customer_email": "ada@example.com"}, "k-read")
    assert result.ok, result
    assert result.output["email"] == "ada@example.com" and result.external_id.startswith("cus_")
    assert stats(helpdesk)["deliveries"] == 0


def test_refund_charge_in_lookup_mode_makes_one_refund_despite_a_lost_answer(
    helpdesk: httpx.Client, helpdesk_url: str
) -> None:
    key = "acme|wf|run-1|triage|refund_charge@1|sha256:abc"
    payload = {"charge_id": "ch_abc123", "amount_cents": 1999}
    helpdesk.post("/_faults", json={"kind": "accept_then_timeout", "ms": 1500})
    lost = _call("refund_charge.v1.yaml", helpdesk_url, payload, key)
    assert not lost.ok and lost.failure_class == "unknown_outcome"
    again = _call("refund_charge.v1.yaml", helpdesk_url, payload, key)  # the retry, under the same key
    assert again.ok and again.output["amount_cents"] == 1999
    seen = stats(helpdesk)
    assert seen["deliveries"] == 1, seen  # the lookup found the first: no second refund
    assert seen["by_effect"] == {effect_id("acme", "run-1", "triage", "turn-1.call-0"): 1}
