"""The generic HTTP adapter against a fake provider: what a definition declares is what a call does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from keel.idempotency import content_ref
from keel.tooldefs import load_definition
from services.adapters import AdapterSettings, ToolResult, call_tool
from services.adapters.base import Effect, ToolRequest
from services.adapters.http_tool import HttpToolAdapter

DEFINITION = """\
name: refund
version: 1
description: Refund a charge.
provider: payments
base_url: http://payments.test
input_schema:
  type: object
  additionalProperties: false
  required: [charge_id, amount_cents]
  properties:
    charge_id: {type: string}
    amount_cents: {type: integer, minimum: 1}
output_schema:
  type: object
  required: [refund_id, status]
  properties:
    refund_id: {type: string, minLength: 1}
    status: {type: string}
external_id: refund_id
request:
  path: /v1/charges/{charge_id}/refunds
  headers:
    Authorization: "Bearer {credential:payments}"
    X-Account: "{credential:payments_account}"
idempotency:
  mode: provider_key
  header: X-Refund-Key
failures:
  rules:
    - {status: 409, error_type: charge_already_refunded, failure_class: validation}
    - {status: 400, body_contains: "try again", failure_class: transient}
  honour_retry_after: false
timeout_s: 0.5
"""
CREDENTIALS = {
    "acme": {"payments": SecretStr("acme-key"), "payments_account": SecretStr("acct_acme")},
    "globex": {"payments": SecretStr("globex-key")},
}
INPUT = {"charge_id": "ch/1 2", "amount_cents": 500}


def adapter(tmp_path: Path, text: str = DEFINITION) -> HttpToolAdapter:
    path = tmp_path / "refund.v1.yaml"
    path.write_text(textwrap.dedent(text))
    return HttpToolAdapter(load_definition(path))


def call(
    tool: HttpToolAdapter,
    answer: httpx.Response,
    seen: list[httpx.Request],
    payload: dict[str, Any] = INPUT,
    tenant: str = "acme",
    timeout_s: float = 5.0,
    approved: tuple[str, str] | None = None,
) -> ToolResult:
    def provider(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer

    settings = AdapterSettings(tool_credentials=CREDENTIALS, tool_timeout_s=timeout_s)
    request = ToolRequest(
        payload, "acme|wf|run-1|refund|abc", Effect(tenant, "run-1", "refund"), approved=approved
    )
    with httpx.Client(transport=httpx.MockTransport(provider)) as fake:
        return call_tool(tool, request, settings, fake)


def test_the_request_is_built_from_the_definition(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []
    result = call(adapter(tmp_path), httpx.Response(200, json={"refund_id": "re_1", "status": "ok"}), seen)
    assert (
        result.ok and result.external_id == "re_1" and result.output == {"refund_id": "re_1", "status": "ok"}
    )
    [sent] = seen
    # The input field is percent-encoded into its path segment: an input can never add a segment.
    assert sent.method == "POST" and sent.url.raw_path == b"/v1/charges/ch%2F1%202/refunds"
    assert str(sent.url).startswith("http://payments.test/")
    assert sent.headers["authorization"] == "Bearer acme-key" and sent.headers["x-account"] == "acct_acme"
    assert (
        sent.headers["x-refund-key"] == "acme|wf|run-1|refund|abc" and "idempotency-key" not in sent.headers
    )
    assert json.loads(sent.content) == {
        **INPUT,
        "metadata": {"keel_tenant": "acme", "keel_run": "run-1", "keel_step": "refund"},
    }


def test_a_tenant_missing_a_named_credential_sends_nothing(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []
    result = call(adapter(tmp_path), httpx.Response(200, json={}), seen, tenant="globex")
    assert result.failure_class == "auth" and not result.request_sent and seen == []
    assert "'globex' has no credential 'payments_account'" in (result.error or "")


def test_the_input_is_checked_before_anything_is_sent(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []
    result = call(
        adapter(tmp_path), httpx.Response(200, json={}), seen, {"charge_id": "ch_1", "amount_cents": 0}
    )
    assert result.failure_class == "validation" and not result.request_sent and seen == []
    assert "$.amount_cents: 0 is less than the minimum of 1" in (result.error or "")


def test_an_answer_breaking_the_output_schema_is_an_accepted_effect_with_its_json_path(
    tmp_path: Path,
) -> None:
    seen: list[httpx.Request] = []
    drifted = {"refund_id": "", "status": "ok"}
    result = call(adapter(tmp_path), httpx.Response(201, json=drifted), seen)
    assert result.failure_class == "validation" and result.effect_accepted and result.evidence == drifted
    assert "$.refund_id: '' should be non-empty" in (result.error or "")


def test_the_definitions_rules_classify_before_the_defaults(tmp_path: Path) -> None:
    tool, seen = adapter(tmp_path), []
    refunded = {"error": {"type": "charge_already_refunded", "message": "done"}}
    assert call(tool, httpx.Response(409, json=refunded), seen).failure_class == "validation"
    busy = {"error": {"type": "busy", "message": "please try again"}}
    assert call(tool, httpx.Response(400, json=busy), seen).failure_class == "transient"
    assert call(tool, httpx.Response(400, json={}), seen).failure_class == "validation"  # the default
    limited = call(tool, httpx.Response(429, headers={"Retry-After": "3"}), seen)
    assert limited.failure_class == "rate_limited" and limited.retry_after_ms is None  # not honoured


def test_the_timeout_never_exceeds_the_deployments(tmp_path: Path) -> None:
    tool = adapter(tmp_path)
    assert tool.timeout_s(5.0) == 0.5 and tool.timeout_s(0.2) == 0.2


@pytest.mark.parametrize("mode", ["lookup"])
def test_a_lookup_reads_the_record_at_its_path(tmp_path: Path, mode: str) -> None:
    text = DEFINITION.replace(
        "  mode: provider_key\n  header: X-Refund-Key\n",
        "  mode: lookup\n  lookup:\n    path: /v1/charges/{charge_id}/refunds\n"
        "    query: {key: '{idempotency_key}'}\n    not_found_status: [404, 410]\n    record_path: data.0\n",
    )
    tool, seen = adapter(tmp_path, text), []
    found = {"data": [{"refund_id": "re_9", "status": "ok", "extra": 1}]}
    result = call(tool, httpx.Response(200, json=found), seen)
    assert result.ok and result.replayed and not result.request_sent and result.external_id == "re_9"
    assert result.output == {"refund_id": "re_9", "status": "ok"}  # only what the contract names
    [asked] = seen
    assert asked.method == "GET" and asked.url.params["key"] == "acme|wf|run-1|refund|abc"
    seen.clear()
    gone = call(tool, httpx.Response(410, text="<html>gone</html>"), seen)  # not found: the write goes ahead
    assert [r.method for r in seen] == ["GET", "POST"] and not gone.replayed


def test_a_bad_definition_fails_the_adapters_start(tmp_path: Path) -> None:
    bad = DEFINITION.replace("/v1/charges/{charge_id}/refunds", "/v1/charges/{charge}/refunds")
    (tmp_path / "refund.v1.yaml").write_text(bad)
    env = {**os.environ, "KEEL_TOOL_DIRS": str(tmp_path), "KEEL_DATA_DIR": str(tmp_path / "var")}
    # Loud and before any connection: the definitions load when the service's modules are imported.
    started = subprocess.run(
        [sys.executable, "-m", "services.adapters", "--instance", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode != 0
    assert f"{tmp_path}/refund.v1.yaml:21: $.request.path: placeholder {{charge}}" in started.stderr


def test_credentials_from_a_file_win_over_the_configured_ones(tmp_path: Path) -> None:
    path = tmp_path / "credentials.json"
    path.write_text(json.dumps({"acme": {"payments": "from-file"}, "*": {"crm": "shared-from-file"}}))
    settings = AdapterSettings(tool_credentials=CREDENTIALS, tool_credentials_file=path)
    acme = settings.credentials().for_tenant("acme")
    assert acme("payments") == "from-file" and acme("payments_account") == "acct_acme"
    assert settings.credential("globex", "crm") == "shared-from-file"
    assert settings.credential("globex", "payments_account") is None  # acme's stays acme's


def test_a_tool_that_requires_approval_is_never_called_without_one(tmp_path: Path) -> None:
    tool, seen = adapter(tmp_path, DEFINITION + "requires_approval: true\n"), []
    result = call(tool, httpx.Response(200, json={"refund_id": "re_1", "status": "ok"}), seen)
    assert result.failure_class == "auth" and not result.request_sent and seen == []
    assert "no approval is bound to this call" in (result.error or "")


def test_an_approval_releases_only_the_payload_and_key_it_was_given_for(tmp_path: Path) -> None:
    tool, answer = (
        adapter(tmp_path, DEFINITION + "requires_approval: true\n"),
        {"refund_id": "re_1", "status": "ok"},
    )
    payload = {"charge_id": "ch_1", "amount_cents": 500}
    key = "acme|wf|run-1|refund|abc"
    other: list[httpx.Request] = []
    wrong = call(
        tool,
        httpx.Response(200, json=answer),
        other,
        payload,
        approved=(content_ref({**payload, "amount_cents": 9}), key),
    )
    assert wrong.failure_class == "auth" and "another payload" in (wrong.error or "") and other == []
    wrong_key = call(
        tool, httpx.Response(200, json=answer), other, payload, approved=(content_ref(payload), "k2")
    )
    assert "another idempotency key" in (wrong_key.error or "") and other == []
    seen: list[httpx.Request] = []
    right = call(tool, httpx.Response(200, json=answer), seen, payload, approved=(content_ref(payload), key))
    assert right.ok and len(seen) == 1


def test_an_answer_without_the_providers_id_is_never_a_success(tmp_path: Path) -> None:
    text = (
        DEFINITION.replace("external_id: refund_id", "external_id: receipt.id")
        .replace(
            "    status: {type: string}\n",
            "    status: {type: string}\n    receipt: {type: object}\n",
        )
        .replace("required: [refund_id, status]", "required: [refund_id, status, receipt]")
    )
    seen: list[httpx.Request] = []
    answer = {"refund_id": "re_1", "status": "ok", "receipt": {}}
    result = call(adapter(tmp_path, text), httpx.Response(200, json=answer), seen)
    assert not result.ok and result.failure_class == "validation" and result.effect_accepted
    assert "$.receipt.id: the provider's id of the effect is missing" in (result.error or "")
