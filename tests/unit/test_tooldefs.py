"""Tool definitions as data: the built-in ones load, and every kind of bad definition is refused with
what is wrong and where (file, line, JSON path)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from pydantic import SecretStr

from keel.tooldefs import (
    StaticCredentials,
    ToolDefinitionError,
    ToolRegistry,
    load_definition,
)
from keel.tooldefs.registry import TOOL_DIR

GOOD = """\
name: refund
version: 1
description: Refund a charge.
input_schema:
  type: object
  required: [charge_id, amount_cents]
  properties:
    charge_id: {type: string}
    amount_cents: {type: integer, minimum: 1}
output_schema:
  type: object
  required: [refund_id]
  properties:
    refund_id: {type: string}
external_id: refund_id
request:
  method: POST
  path: /v1/charges/{charge_id}/refunds
  headers:
    Authorization: "Bearer {credential:payments}"
idempotency:
  mode: provider_key
  header: Idempotency-Key
  key_retention_s: 86400
"""


def write(tmp_path: Path, text: str, name: str = "refund.v1.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def refused(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ToolDefinitionError) as caught:
        load_definition(path)
    message = str(caught.value)
    assert str(path) in message  # always says which file
    return message


def test_the_built_in_tools_load_with_their_modes() -> None:
    registry = ToolRegistry.from_dirs([TOOL_DIR])
    assert registry.names() == ["crm@1", "email@1", "lookup_customer@1", "refund_charge@1"]
    assert registry.mode("email@1") == "provider_key" and registry.mode("crm@1") == "lookup"
    assert registry.mode("refund_charge@1") == "lookup" and registry.mode("lookup_customer@1") == "none"
    assert not registry.get("lookup_customer@1").side_effects
    assert registry.get("email@1").idempotency.header == "Idempotency-Key"
    assert registry.mode("sms@1") is None


def test_a_good_definition_loads(tmp_path: Path) -> None:
    definition = load_definition(write(tmp_path, GOOD))
    assert definition.tool == "refund@1" and definition.side_effects and not definition.requires_approval
    assert definition.idempotency.key_retention_s == 86400


def test_an_unknown_field_is_refused_with_its_line_and_path(tmp_path: Path) -> None:
    message = refused(tmp_path, GOOD.replace("  key_retention_s: 86400", "  key_retention: 86400"))
    assert ":24: $.idempotency.key_retention: unknown field" in message


def test_a_misspelt_top_level_field_is_refused(tmp_path: Path) -> None:
    message = refused(tmp_path, GOOD + "side_efects: true\n")
    assert ":25: $.side_efects: unknown field" in message


def test_an_invalid_json_schema_is_refused_with_its_path(tmp_path: Path) -> None:
    message = refused(tmp_path, GOOD.replace("amount_cents: {type: integer", "amount_cents: {type: integr"))
    assert ":9: $.input_schema.properties.amount_cents.type: invalid JSON Schema:" in message
    assert "'integr' is not valid" in message


def test_a_url_template_naming_a_field_not_in_the_input_is_refused(tmp_path: Path) -> None:
    message = refused(
        tmp_path, GOOD.replace("/v1/charges/{charge_id}/refunds", "/v1/charges/{charge}/refunds")
    )
    assert ":18: $.request.path: placeholder {charge} is not a property of input_schema" in message


def test_a_malformed_placeholder_is_refused(tmp_path: Path) -> None:
    message = refused(tmp_path, GOOD.replace("{charge_id}/refunds", "{charge id}/refunds"))
    assert "$.request.path: malformed placeholder {charge id}" in message


def test_provider_key_without_a_header_is_refused(tmp_path: Path) -> None:
    message = refused(tmp_path, GOOD.replace("  header: Idempotency-Key\n", ""))
    assert ":21: $.idempotency: " in message and "mode provider_key needs `header`" in message


def test_lookup_without_its_request_is_refused(tmp_path: Path) -> None:
    message = refused(tmp_path, GOOD.replace("mode: provider_key", "mode: lookup"))
    assert "$.idempotency: " in message and "mode lookup needs `lookup`" in message


def test_an_external_id_not_in_the_output_is_refused(tmp_path: Path) -> None:
    message = refused(tmp_path, GOOD.replace("external_id: refund_id", "external_id: id"))
    assert ":15: $.external_id: 'id' is not a property of output_schema" in message


def test_a_missing_field_points_at_its_parent(tmp_path: Path) -> None:
    message = refused(tmp_path, GOOD.replace("description: Refund a charge.\n", ""))
    assert "$.description: missing required field" in message


def test_every_problem_of_a_file_is_reported_at_once(tmp_path: Path) -> None:
    text = GOOD.replace("{type: integer", "{type: integr") + "side_efects: true\n"
    lines = refused(tmp_path, text).splitlines()
    assert len(lines) == 2
    assert ":9: $.input_schema.properties.amount_cents.type: invalid JSON Schema" in lines[0]
    assert ":25: $.side_efects: unknown field" in lines[1]


def test_the_same_name_and_version_with_other_content_is_refused(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    write(a, GOOD)
    write(b, GOOD.replace("Refund a charge.", "Refund a charge, quickly."))
    with pytest.raises(ToolDefinitionError, match="refund@1 is already defined by .* with different content"):
        ToolRegistry.from_dirs([a, b])
    write(b, GOOD)  # the very same content twice is one definition
    assert ToolRegistry.from_dirs([a, b]).names() == ["refund@1"]


def test_a_bad_file_among_good_ones_fails_the_whole_load(tmp_path: Path) -> None:
    write(tmp_path, GOOD)
    write(tmp_path, GOOD.replace("name: refund", "name: refund\nnmae: x"), "broken.v1.yaml")
    with pytest.raises(ToolDefinitionError, match=r"broken\.v1\.yaml:2: \$\.nmae: unknown field"):
        ToolRegistry.from_dirs([tmp_path])


def test_tool_dirs_come_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, GOOD)
    monkeypatch.setenv("KEEL_TOOL_DIRS", f"{tmp_path}:")
    built_in = ToolRegistry.from_dirs([TOOL_DIR]).names()
    assert ToolRegistry.configured().names() == sorted([*built_in, "refund@1"])
    # A misspelt directory would silently drop its tools: refused instead.
    monkeypatch.setenv("KEEL_TOOL_DIRS", f"{tmp_path}:/nonexistent/tools")
    with pytest.raises(ToolDefinitionError, match="/nonexistent/tools: not a directory"):
        ToolRegistry.configured()


def test_a_tenant_resolves_only_its_own_credentials() -> None:
    source = StaticCredentials({"acme": {"payments": SecretStr("acme-secret")}, "*": {"email": "shared"}})
    assert source.for_tenant("acme")("payments") == "acme-secret"
    assert source.for_tenant("acme")("email") == "shared"
    with pytest.raises(LookupError, match="'globex' has no credential 'payments'"):
        source.for_tenant("globex")("payments")


def test_an_external_id_the_output_may_lack_is_refused(tmp_path: Path) -> None:
    message = refused(tmp_path, GOOD.replace("  required: [refund_id]\n", ""))
    assert ":14: $.external_id: 'refund_id' must be in output_schema's `required`" in message
