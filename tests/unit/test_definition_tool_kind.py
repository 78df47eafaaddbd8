"""Tool definitions as a registered kind: canonical content parses back; bad ones say what and where."""

from __future__ import annotations

import json

import pytest

from keel.definitions.kinds import content_of, parse
from keel.definitions.problems import DefinitionInvalid, load_text
from keel.schemas import REPO_ROOT
from keel.tooldefs import ToolDefinition, load_definition

REFUND = REPO_ROOT / "docs" / "examples" / "tools" / "refund.v1.yaml"
FILES = [REPO_ROOT / "tools" / "email.v1.yaml", REPO_ROOT / "tools" / "crm.v1.yaml", REFUND]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_the_canonical_content_of_a_tool_parses_back_to_an_equal_definition(path):
    text = path.read_text()
    parsed = parse("tool", load_text(text, str(path))[0], str(path))
    assert parsed.value == load_definition(path)  # the kind and the file loader agree
    again = ToolDefinition.model_validate(json.loads(content_of(parsed.value)))
    assert again == parsed.value
    assert content_of(again) == parsed.content  # and so the digest is stable
    assert (parsed.name, parsed.version) == (parsed.value.name, parsed.value.version)


def refused(text: str) -> list[tuple[str, int | None, str]]:
    data, lines = load_text(text, "tool.yaml")
    with pytest.raises(DefinitionInvalid) as exc:
        parse("tool", data, "tool.yaml", lines)
    assert str(exc.value).startswith("tool.yaml")
    return [(p.path, p.line, p.message) for p in exc.value.problems]


def line_with(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


TEXT = REFUND.read_text()


def test_an_unknown_field_is_named_with_its_path_and_line():
    text = TEXT.replace("side_effects: true", "side_efects: true", 1)
    assert refused(text) == [("$.side_efects", line_with(text, "side_efects"), "unknown field")]


def test_an_invalid_json_schema_is_refused_at_its_path():
    text = TEXT.replace("amount_cents: {type: integer, minimum: 1}", "amount_cents: {type: intger}", 1)
    [(path, line, message)] = refused(text)
    assert path == "$.input_schema.properties.amount_cents.type"
    assert message.startswith("invalid JSON Schema") and line == line_with(text, "type: intger")


def test_an_input_that_is_not_an_object_is_refused():
    data = load_text(TEXT, "t")[0]
    data["input_schema"] = {"type": "string"}
    with pytest.raises(DefinitionInvalid) as exc:
        parse("tool", data, "t")
    assert [p.path for p in exc.value.problems] == ["$.input_schema.type"]


def test_a_provider_key_tool_without_a_header_is_refused():
    data = load_text(TEXT, "t")[0]
    data["idempotency"] = {"mode": "provider_key"}
    with pytest.raises(DefinitionInvalid) as exc:
        parse("tool", data, "t")
    [problem] = exc.value.problems
    assert problem.path == "$.idempotency" and "needs `header`" in problem.message


def test_a_placeholder_naming_a_missing_field_points_at_the_template():
    text = TEXT.replace("path: /v1/refunds", "path: /v1/refunds/{nope}", 1)
    [(path, line, message)] = refused(text)
    assert path == "$.request.path" and "{nope}" in message
    assert line == line_with(text, "/v1/refunds/{nope}")


def test_a_missing_field_and_a_missing_header_are_reported_together():
    data = load_text(TEXT, "t")[0]
    del data["description"]
    data["request"]["method"] = "FETCH"
    with pytest.raises(DefinitionInvalid) as exc:
        parse("tool", data, "t")
    paths = {p.path: p.message for p in exc.value.problems}
    assert paths["$.description"] == "missing required field" and "$.request.method" in paths


def test_a_tool_that_is_not_a_mapping_is_refused():
    with pytest.raises(DefinitionInvalid):
        parse("tool", ["refund"], "t")
