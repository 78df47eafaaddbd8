"""Bad definitions are refused with what and where: JSON path and YAML line."""

from __future__ import annotations

import pytest

from keel.definitions.kinds import check_references, known_in, parse
from keel.definitions.problems import DefinitionInvalid, load_text
from keel.schemas import REPO_ROOT

OUTBOUND = (REPO_ROOT / "workflows" / "outbound_email.v1.yaml").read_text()


def refused(text: str) -> list[tuple[str, int | None, str]]:
    data, lines = load_text(text, "wf.yaml")
    with pytest.raises(DefinitionInvalid) as exc:
        check_references(parse("workflow", data, "wf.yaml", lines), known_in([]), "wf.yaml", lines)
    assert str(exc.value).startswith("wf.yaml:")
    return [(p.path, p.line, p.message) for p in exc.value.problems]


def line_with(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_a_valid_workflow_parses_to_canonical_content_whatever_its_layout():
    a = parse("workflow", load_text(OUTBOUND, "a")[0], "a")
    reordered = OUTBOUND + "\n# a comment changes nothing\n"
    b = parse("workflow", load_text(reordered, "b")[0], "b")
    assert (a.name, a.version, a.digest) == ("outbound_email", 1, b.digest)
    assert a.digest.startswith("sha256:") and '"name":"outbound_email"' in a.content


def test_an_unknown_field_is_named_with_its_path_and_line():
    text = OUTBOUND.replace("    needs: [draft_email]", "    need: [draft_email]", 1)
    [(path, line, message)] = [p for p in refused(text) if "need" in p[0]]
    assert path.endswith(".need") and path.startswith("$.steps[") and message.endswith("unknown field")
    assert line == line_with(text, "need: [draft_email]")


def test_a_step_needing_an_unknown_step_points_at_its_needs():
    text = OUTBOUND.replace("    needs: [draft_email]", "    needs: [draft_mail]", 1)
    problems = refused(text)
    assert any(p[0].endswith(".needs") and "unknown step 'draft_mail'" in p[2] for p in problems)
    assert any(p[1] == line_with(text, "needs: [draft_mail]") for p in problems)


def test_a_template_reading_a_missing_input_field_points_at_the_step():
    text = OUTBOUND.replace("input.lead_email", "input.lead_mail", 1)
    [(path, line, message)] = refused(text)
    assert path.startswith("$.steps[") and "input.lead_mail" in message and line is not None


def test_a_cycle_is_refused_with_the_step_it_starts_at():
    text = OUTBOUND.replace("  - name: draft_email\n", "  - name: draft_email\n    needs: [send_email]\n", 1)
    [(path, _, message)] = refused(text)
    assert path == "$.steps[0].needs" and message.startswith("cycle in needs: draft_email")


def test_an_unknown_tool_version_is_refused_and_a_registered_one_accepted():
    text = OUTBOUND.replace("tool: email@1", "tool: email@9")
    [(path, line, message)] = refused(text)
    assert path.endswith(".tool") and "unknown tool 'email@9'" in message
    assert line == line_with(text, "tool: email@9")
    data, lines = load_text(text, "wf.yaml")
    check_references(parse("workflow", data, "x", lines), known_in([("tool", "email@9")]), "x")


def test_yaml_that_does_not_parse_and_unknown_kinds_are_refused():
    with pytest.raises(DefinitionInvalid, match=r"x.yaml:2: \$: not valid YAML"):
        load_text("name: a\n  - b: [\n", "x.yaml")
    with pytest.raises(DefinitionInvalid, match="unknown definition kind 'gadget'"):
        parse("gadget", {}, "x")


def test_registered_content_parses_back_to_the_same_definition():
    import json

    files = [*(REPO_ROOT / "workflows").glob("*.yaml"), *(REPO_ROOT / "tests" / "workflows").glob("*.yaml")]
    for path in files:
        first = parse("workflow", load_text(path.read_text(), str(path))[0], str(path))
        again = parse("workflow", json.loads(first.content), "content")
        assert (again.digest, again.value) == (first.digest, first.value), path
