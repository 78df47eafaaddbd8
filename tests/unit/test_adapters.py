"""Tool adapters against the real simulators: idempotent sends, failure classes and schema drift."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from helpers import wait_for
from pydantic import SecretStr

from infra.simulators.dedup import effect_id
from keel.contracts import LedgerRecord
from keel.idempotency import idempotency_key
from keel.toolrun.retention import CommittedKeys
from services.adapters import AdapterSettings, ToolResult, UnknownTool, call_tool, get_adapter
from services.adapters.base import Effect, ToolRequest
from services.adapters.classify import classify_exception, classify_http, parse_retry_after, request_was_sent

pytestmark = pytest.mark.timeout(30)

EMAIL = get_adapter("email@1")
CRM = get_adapter("crm@1")
MESSAGE = {"to": "ada@example.com", "subject": "Hello", "body": "First draft"}
ACTIVITY = {"contact_email": "ada@example.com", "kind": "email_sent", "note": "intro"}


def key(payload: dict[str, Any], step: str = "send") -> str:
    return idempotency_key("acme", "outreach", "run-1", step, payload)


@pytest.fixture
def control(email_url: str, crm_url: str) -> Iterator[dict[str, httpx.Client]]:
    """Control clients (/_reset, /_faults, /_stats) per simulator, each starting from a clean state."""
    clients = {
        name: httpx.Client(base_url=url, timeout=5.0)
        for name, url in (("email", email_url), ("crm", crm_url))
    }
    for client in clients.values():
        client.post("/_reset").raise_for_status()
    yield clients
    for client in clients.values():
        client.close()


@pytest.fixture
def settings(email_url: str, crm_url: str) -> AdapterSettings:
    return AdapterSettings(email_url=email_url, crm_url=crm_url, tool_timeout_s=2.0)


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(trust_env=False) as client:
        yield client


def stats(client: httpx.Client) -> dict[str, Any]:
    result: dict[str, Any] = client.get("/_stats").json()
    return result


def fault(client: httpx.Client, **rule: Any) -> None:
    client.post("/_faults", json=rule).raise_for_status()


EFFECT = effect_id("acme", "run-1", "send")


def send(
    settings: AdapterSettings,
    http: httpx.Client,
    payload: dict[str, Any] = MESSAGE,
    tenant: str = "acme",
    adapter: Any = EMAIL,
    deadline_ms: int | None = None,
    clock: Any = None,
) -> ToolResult:
    request = ToolRequest(payload, key(payload), Effect(tenant, "run-1", "send"), deadline_ms)
    if clock is None:
        return call_tool(adapter, request, settings, http)
    return call_tool(adapter, request, settings, http, clock)


# --- email@1 (provider_key) -------------------------------------------------------------------------


def test_email_happy_path(
    control: dict[str, httpx.Client], settings: AdapterSettings, http: httpx.Client
) -> None:
    result = send(settings, http)
    assert result.ok and result.failure_class is None and result.request_sent
    assert result.output is not None and result.external_id == result.output["message_id"]
    assert str(result.external_id).startswith("msg_") and result.http_status == 200 and not result.replayed
    assert stats(control["email"])["deliveries"] == 1


def test_email_same_key_same_message(
    control: dict[str, httpx.Client], settings: AdapterSettings, http: httpx.Client
) -> None:
    first, second = send(settings, http), send(settings, http)
    assert first.ok and second.ok and first.external_id == second.external_id and second.replayed
    assert stats(control["email"])["deliveries"] == 1


def test_email_accept_then_timeout_is_unknown_then_retry_is_safe(
    control: dict[str, httpx.Client], settings: AdapterSettings, http: httpx.Client
) -> None:
    fault(control["email"], kind="accept_then_timeout", ms=1500)
    short = settings.model_copy(update={"tool_timeout_s": 0.3})
    lost = send(short, http)
    assert not lost.ok and lost.failure_class == "unknown_outcome" and lost.request_sent
    assert "ReadTimeout" in (lost.error or "")
    assert stats(control["email"])["deliveries"] == 1  # the provider did act

    retry = send(settings, http)
    assert retry.ok and retry.replayed
    email_stats = stats(control["email"])
    assert email_stats["deliveries"] == 1 and email_stats["by_key"] == {key(MESSAGE): 1}
    assert retry.external_id is not None and retry.external_id.startswith("msg_")


def test_email_rate_limited(
    control: dict[str, httpx.Client], settings: AdapterSettings, http: httpx.Client
) -> None:
    fault(control["email"], kind="rate_limit", retry_after=2)
    result = send(settings, http)
    assert result.failure_class == "rate_limited" and result.http_status == 429
    assert result.retry_after_ms == 2000 and not result.ok
    assert stats(control["email"])["deliveries"] == 0


def test_email_server_error_is_transient(
    control: dict[str, httpx.Client], settings: AdapterSettings, http: httpx.Client
) -> None:
    fault(control["email"], kind="error", status=500)
    result = send(settings, http)
    assert result.failure_class == "transient" and result.http_status == 500 and not result.ok


def test_email_revoked_credentials_is_auth(
    control: dict[str, httpx.Client], settings: AdapterSettings, http: httpx.Client
) -> None:
    fault(control["email"], kind="auth")
    result = send(settings, http)
    assert result.failure_class == "auth" and result.http_status == 401 and not result.ok


def test_email_null_message_id_is_schema_drift(
    control: dict[str, httpx.Client], settings: AdapterSettings, http: httpx.Client
) -> None:
    fault(control["email"], kind="null_field", field="message_id")
    result = send(settings, http)
    assert not result.ok and result.failure_class == "validation" and result.external_id is None
    assert result.request_sent and "$.message_id" in (result.error or "")
    # The 2xx proves the provider acted: the failure says so and keeps its answer as evidence.
    assert result.effect_accepted and result.evidence == {
        "message_id": None,
        "status": "accepted",
        "to": MESSAGE["to"],
    }
    assert stats(control["email"])["deliveries"] == 1  # sent, yet never reported as a success


def test_email_invalid_input_sends_nothing(
    control: dict[str, httpx.Client], settings: AdapterSettings, http: httpx.Client
) -> None:
    result = send(settings, http, {**MESSAGE, "to": "not-an-address"})
    assert result.failure_class == "validation" and not result.request_sent
    assert "to" in (result.error or "")
    assert stats(control["email"])["requests"] == 0


def test_tenant_without_credentials_is_auth(
    control: dict[str, httpx.Client], email_url: str, crm_url: str, http: httpx.Client
) -> None:
    only_acme = {"acme": {"email": SecretStr("sim-email-token")}}
    settings = AdapterSettings(email_url=email_url, crm_url=crm_url, tool_credentials=only_acme)
    assert send(settings, http, tenant="acme").ok
    stranger = send(settings, http, tenant="globex")
    assert stranger.failure_class == "auth" and not stranger.request_sent
    assert "globex" in (stranger.error or "")
    assert stats(control["email"])["requests"] == 1


def test_shared_credentials_apply_to_every_tenant(settings: AdapterSettings) -> None:
    assert settings.credential("anyone", "email") == "sim-email-token"
    assert settings.credential("anyone", "sms") is None


# --- crm@1 (lookup) ---------------------------------------------------------------------------------


def test_crm_lookup_finds_the_lost_effect(
    control: dict[str, httpx.Client], settings: AdapterSettings, http: httpx.Client
) -> None:
    fault(control["crm"], kind="accept_then_timeout", ms=1500)
    short = settings.model_copy(update={"tool_timeout_s": 0.3})
    lost = send(short, http, ACTIVITY, adapter=CRM)
    assert lost.failure_class == "unknown_outcome" and lost.request_sent
    assert stats(control["crm"])["deliveries"] == 1

    found = send(settings, http, ACTIVITY, adapter=CRM)
    assert found.ok and found.replayed and not found.request_sent
    assert found.external_id is not None and found.external_id.startswith("act_")
    assert found.output is not None and set(found.output) == {
        "activity_id",
        "contact_email",
        "kind",
        "created_at",
    }
    crm_stats = stats(control["crm"])
    # Two lookups and one POST: the second call never wrote, so nothing was replayed or delivered twice.
    assert crm_stats["requests"] == 3 and crm_stats["deliveries"] == 1 and crm_stats["replays"] == 0


def test_crm_first_call_looks_up_then_writes(
    control: dict[str, httpx.Client], settings: AdapterSettings, http: httpx.Client
) -> None:
    result = send(settings, http, ACTIVITY, adapter=CRM)
    assert result.ok and result.request_sent and not result.replayed
    assert stats(control["crm"])["requests"] == 2


def test_crm_lookup_timeout_is_transient(
    control: dict[str, httpx.Client], settings: AdapterSettings, http: httpx.Client
) -> None:
    # A slow lookup is a read that made no effect: safe to retry, never an unknown outcome.
    fault(control["crm"], kind="latency", ms=1000, path="/v1/activities", method="GET")
    result = send(settings.model_copy(update={"tool_timeout_s": 0.3}), http, ACTIVITY, adapter=CRM)
    assert result.failure_class == "transient" and not result.request_sent
    assert stats(control["crm"])["deliveries"] == 0


def test_every_write_names_its_logical_effect(
    control: dict[str, httpx.Client], settings: AdapterSettings, http: httpx.Client
) -> None:
    assert send(settings, http).ok and send(settings, http, ACTIVITY, adapter=CRM).ok
    for name in ("email", "crm"):
        figures = stats(control[name])
        assert figures["by_effect"] == {EFFECT: 1} and figures["without_effect"] == 0, name


def test_crm_without_key_dedup_is_protected_by_the_lookup_alone(
    control: dict[str, httpx.Client], settings: AdapterSettings, http: httpx.Client
) -> None:
    control["crm"].post("/_mode", json={"dedup": "none"}).raise_for_status()
    fault(control["crm"], kind="accept_then_timeout", ms=1500)
    lost = send(settings.model_copy(update={"tool_timeout_s": 0.3}), http, ACTIVITY, adapter=CRM)
    assert lost.failure_class == "unknown_outcome"
    found = send(settings, http, ACTIVITY, adapter=CRM)
    assert found.ok and found.replayed and not found.request_sent
    assert stats(control["crm"])["by_effect"] == {EFFECT: 1}


def test_a_key_in_flight_at_a_stripe_like_provider_is_an_unknown_outcome(
    control: dict[str, httpx.Client], settings: AdapterSettings, http: httpx.Client
) -> None:
    control["email"].post("/_mode", json={"dedup": "stripe"}).raise_for_status()
    fault(control["email"], kind="latency", ms=1500)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(send, settings, httpx.Client(trust_env=False))
        wait_for(lambda: stats(control["email"])["requests"] == 1, 5, "the first send to arrive")
        second = send(settings, http)
        assert first.result().ok
    assert not second.ok and second.http_status == 409 and second.failure_class == "unknown_outcome"
    assert "still being processed" in (second.error or "")
    assert stats(control["email"])["by_effect"] == {EFFECT: 1}


def test_a_5xx_after_the_effect_is_retried_safely_under_the_key(
    control: dict[str, httpx.Client], settings: AdapterSettings, http: httpx.Client
) -> None:
    fault(control["email"], kind="accept_then_error", status=503)
    failed = send(settings, http)
    assert failed.failure_class == "transient" and failed.http_status == 503
    retry = send(settings, http)
    assert retry.ok and retry.replayed
    assert stats(control["email"])["by_effect"] == {EFFECT: 1}


def test_no_request_starts_after_the_deadline(
    control: dict[str, httpx.Client], settings: AdapterSettings, http: httpx.Client
) -> None:
    now = int(time.time() * 1000)
    late = send(settings, http, deadline_ms=now - 1)
    assert not late.ok and late.blocked_reason and "deadline passed" in late.blocked_reason
    assert not late.request_sent and late.failure_class == "transient"
    assert stats(control["email"])["requests"] == 0
    assert send(settings, http, deadline_ms=now + 60_000).ok


def test_a_deadline_passing_during_the_lookup_stops_the_write(
    control: dict[str, httpx.Client], settings: AdapterSettings, http: httpx.Client
) -> None:
    ticks = iter([1_000, 2_001])  # before the lookup, then before the write
    result = send(settings, http, ACTIVITY, adapter=CRM, deadline_ms=2_000, clock=lambda: next(ticks))
    assert result.blocked_reason and "before POST /v1/activities" in result.blocked_reason
    crm = stats(control["crm"])
    assert crm["requests"] == 1 and crm["deliveries"] == 0  # the lookup ran; the write never started


def test_a_drifted_record_found_by_lookup_is_an_accepted_effect(
    control: dict[str, httpx.Client], settings: AdapterSettings, http: httpx.Client
) -> None:
    fault(control["crm"], kind="accept_then_timeout", ms=1500)
    send(settings.model_copy(update={"tool_timeout_s": 0.3}), http, ACTIVITY, adapter=CRM)
    fault(control["crm"], kind="null_field", field="created_at", path="/v1/activities", method="GET")
    found = send(settings, http, ACTIVITY, adapter=CRM)
    assert not found.ok and found.failure_class == "validation" and found.effect_accepted
    assert found.replayed and not found.request_sent and "$.created_at" in (found.error or "")
    assert found.evidence["created_at"] is None and found.evidence["activity_id"].startswith("act_")
    assert stats(control["crm"])["deliveries"] == 1


def test_a_2xx_that_is_not_json_is_an_accepted_effect_with_its_text_as_evidence() -> None:
    def provider(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="<html>queued</html>")

    with httpx.Client(transport=httpx.MockTransport(provider)) as fake:
        result = send(AdapterSettings(email_url="http://provider.test"), fake)
    assert result.failure_class == "validation" and result.effect_accepted
    assert result.evidence == "<html>queued</html>"


def test_unknown_tool() -> None:
    with pytest.raises(UnknownTool, match="sms@1"):
        get_adapter("sms@1")


# --- pure classification ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (429, "rate_limited"),
        (401, "auth"),
        (403, "auth"),
        (408, "transient"),
        (500, "transient"),
        (502, "transient"),
        (503, "transient"),
        (504, "transient"),
        (400, "validation"),
        (404, "validation"),
        (409, "validation"),  # a plain conflict; a key in use is below
        (422, "validation"),
    ],
)
def test_classify_http(status: int, expected: str) -> None:
    assert classify_http(status) == expected


def test_a_key_in_use_is_an_unknown_outcome_never_validation() -> None:
    assert classify_http(409, "idempotency_key_in_use") == "unknown_outcome"
    assert classify_http(409, "conflict") == "validation"


def test_classify_http_refuses_success() -> None:
    with pytest.raises(ValueError):
        classify_http(200)


def test_classify_exception() -> None:
    request = httpx.Request("POST", "http://provider.test/v1/messages")
    refused = httpx.ConnectError("refused", request=request)
    timed_out = httpx.ReadTimeout("timed out", request=request)
    cut = httpx.RemoteProtocolError("server disconnected", request=request)
    assert not request_was_sent(refused) and classify_exception(refused, False) == "transient"
    assert request_was_sent(timed_out) and classify_exception(timed_out, True) == "unknown_outcome"
    assert classify_exception(cut, True) == "unknown_outcome"
    assert classify_exception(timed_out, False) == "transient"  # e.g. a lookup, which writes nothing


def test_parse_retry_after() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("3") == 3000 and parse_retry_after("0.5") == 500
    assert parse_retry_after("Wed, 01 Jan 2025 12:00:10 GMT", now) == 10_000
    assert parse_retry_after("Wed, 01 Jan 2025 11:00:00 GMT", now) == 0  # in the past: retry now
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None


# --- the ledger view's retention horizon -------------------------------------------------------------


def _commit(key: str, at_ms: int) -> LedgerRecord:
    return LedgerRecord(
        idempotency_key=key,
        tenant_id="acme",
        workflow="outreach",
        run_id="run-1",
        step="send",
        attempt=1,
        external_id=f"id-{key}",
        committed_at=datetime.fromtimestamp(at_ms / 1000, UTC),
    )


def test_committed_keys_are_held_for_the_horizon_from_their_commit() -> None:
    keys = CommittedKeys(horizon_s=10)
    keys.put(_commit("old", 1_000), now_ms=1_000)
    keys.put(_commit("new", 6_000), now_ms=6_000)
    assert keys.get("old", 10_999) is not None and len(keys) == 2  # within 10 s of its commit
    assert keys.get("old", 11_000) is None and keys.get("new", 11_000) is not None  # beyond: forgotten
    assert len(keys) == 1
    assert keys.get("new", 16_000) is None and len(keys) == 0


def test_a_commit_read_after_its_horizon_is_never_held() -> None:
    keys = CommittedKeys(horizon_s=10)
    keys.put(_commit("restored", 1_000), now_ms=50_000)  # e.g. read from the topic's start at restore
    assert keys.get("restored", 50_000) is None and len(keys) == 0


def test_the_horizon_defaults_to_seven_days_and_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert AdapterSettings().retention_horizon_s == 7 * 24 * 3600
    monkeypatch.setenv("KEEL_RETENTION_HORIZON_S", "60")
    assert AdapterSettings().retention_horizon_s == 60
