"""Workflows as data: shipped YAML, validation errors, templating, graph readiness, drawing, input checks."""

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from keel.schemas import REPO_ROOT
from keel.workflows import (
    Catalog,
    InvalidInput,
    RetryPolicy,
    TemplateError,
    UnknownWorkflow,
    WorkflowError,
    build_context,
    load_workflow,
    mermaid,
    parse_workflow,
    ready_steps,
    references,
    render,
    render_text,
    topological_order,
    validate_input,
)

OUTBOUND = REPO_ROOT / "workflows" / "outbound_email.v1.yaml"
ENRICHMENT = REPO_ROOT / "workflows" / "lead_enrichment.v1.yaml"
SOURCE = "workflows/broken.v1.yaml"


def outbound() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(OUTBOUND.read_text())
    return copy.deepcopy(data)


def errors_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(WorkflowError) as exc:
        parse_workflow(data, SOURCE)
    assert all(line.startswith(f"{SOURCE}: ") for line in str(exc.value).splitlines())
    return exc.value.problems


# --- the shipped workflows ---------------------------------------------------------------------------


def test_outbound_email_loads_as_the_seed_example():
    spec = load_workflow(OUTBOUND)
    assert (spec.name, spec.version) == ("outbound_email", 1)
    assert spec.input == {"lead_email": "string", "lead_name": "string", "product": "string"}
    assert [s.name for s in spec.steps] == ["draft_email", "log_to_crm", "send_email"]
    draft, log, send = spec.steps
    assert (draft.kind, draft.model, draft.response_format, draft.budget_usd) == (
        "llm",
        "sim-small",
        "json",
        0.05,
    )
    assert (log.tool, log.needs, log.side_effects) == ("crm@1", ("draft_email",), True)
    assert set(log.input) == {"contact_email", "kind", "note"} and set(send.input) == {
        "to",
        "subject",
        "body",
    }
    assert send.retry == RetryPolicy(
        max_attempts=5, initial_backoff_ms=200, max_backoff_ms=5000, multiplier=2.0
    )
    assert log.retry == RetryPolicy() and log.timeout_ms == 60_000 and draft.needs == ()


def test_lead_enrichment_fans_out_and_joins():
    spec = load_workflow(ENRICHMENT)
    assert spec.step("research_company").needs == spec.step("research_person").needs == ()
    assert spec.step("summarize").needs == ("research_company", "research_person")
    log = spec.step("log_summary")
    assert (log.tool, log.needs, log.side_effects) == ("crm@1", ("summarize",), True)
    assert set(log.input) == {"contact_email", "kind", "note"}


def test_catalog_loads_every_shipped_workflow_and_picks_the_newest(tmp_path: Path):
    catalog = Catalog.load()
    assert catalog.names() == ["lead_enrichment", "outbound_email", "support_triage"]
    assert catalog.get("outbound_email", 1) == load_workflow(OUTBOUND)

    v2 = outbound() | {"version": 2, "description": "second"}
    for name, data in (("outbound_email.v1.yaml", outbound()), ("outbound_email.v2.yaml", v2)):
        (tmp_path / name).write_text(yaml.safe_dump(data))
    local = Catalog.load(tmp_path)
    assert local.versions("outbound_email") == [1, 2]
    assert local.get("outbound_email").description == "second"
    assert local.get("outbound_email", 1).version == 1


def test_catalog_errors_name_what_is_known(tmp_path: Path):
    catalog = Catalog.load()
    with pytest.raises(
        UnknownWorkflow, match="unknown workflow 'nope'; known: lead_enrichment, outbound_email"
    ):
        catalog.get("nope")
    with pytest.raises(UnknownWorkflow, match="has no version 7; known versions: 1"):
        catalog.get("outbound_email", 7)
    (tmp_path / "outbound.yaml").write_text(OUTBOUND.read_text())
    with pytest.raises(WorkflowError, match=r"outbound.yaml: file name must be .*'outbound_email.v1.yaml'"):
        Catalog.load(tmp_path)


def test_load_reports_unreadable_yaml_with_the_file(tmp_path: Path):
    bad = tmp_path / "bad.v1.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(WorkflowError, match="bad.v1.yaml: cannot read"):
        load_workflow(bad)
    bad.write_text("- just a list")
    with pytest.raises(WorkflowError, match="expected a mapping"):
        load_workflow(bad)


# --- validation errors: each says what is wrong and where ---------------------------------------------


def test_unknown_kind():
    data = outbound()
    data["steps"][0]["kind"] = "human"
    expected = "step 'draft_email': unknown kind 'human'; expected one of 'llm', 'tool', 'agent', 'approval'"
    assert errors_of(data) == [expected]


def test_llm_step_needs_prompt_and_model():
    data = outbound()
    del data["steps"][0]["prompt"], data["steps"][0]["model"]
    assert errors_of(data) == ["step 'draft_email': llm step needs model and prompt"]


def test_tool_step_needs_a_versioned_tool():
    data = outbound()
    del data["steps"][1]["tool"]
    assert errors_of(data) == ["step 'log_to_crm': tool step needs `tool` (format name@version, e.g. crm@1)"]
    data["steps"][1]["tool"] = "crm"
    assert errors_of(data) == ["step 'log_to_crm': tool 'crm' is not in the format name@version (e.g. crm@1)"]


def test_fields_of_the_other_kind_are_rejected():
    data = outbound()
    data["steps"][1]["prompt"] = "hello"
    data["steps"][0]["input"] = {"x": 1}
    assert errors_of(data) == [
        "step 'draft_email': llm step must not set input",
        "step 'log_to_crm': tool step must not set prompt",
    ]


def test_duplicate_step_names():
    data = outbound()
    data["steps"][2]["name"] = "log_to_crm"
    assert errors_of(data) == ["duplicate step name 'log_to_crm'"]


def test_needs_naming_an_unknown_step():
    data = outbound()
    data["steps"][2]["needs"] = ["log_to_cmr"]
    assert errors_of(data) == ["step 'send_email' needs unknown step 'log_to_cmr'"]


def test_cycle_is_named():
    data = outbound()
    data["steps"][0]["needs"] = ["send_email"]
    assert errors_of(data) == ["cycle in needs: draft_email -> send_email -> log_to_crm -> draft_email"]
    data["steps"][0]["needs"] = ["draft_email"]
    assert errors_of(data) == ["cycle in needs: draft_email -> draft_email"]


def test_template_reference_to_an_unknown_step():
    data = outbound()
    data["steps"][1]["input"]["note"] = "{{ steps.drafts.output.subject }}"
    assert errors_of(data) == ["step 'log_to_crm' reads steps.drafts, an unknown step"]


def test_template_may_only_read_ancestors():
    data = outbound()
    # Dropping log_to_crm's need cuts both steps off: send_email reached draft_email only through it.
    data["steps"][1]["needs"] = []
    assert errors_of(data) == [
        "step 'log_to_crm' reads steps.draft_email but does not depend on 'draft_email' (add it to needs)",
        "step 'send_email' reads steps.draft_email but does not depend on 'draft_email' (add it to needs)",
    ]
    # A transitive ancestor is enough: send_email reads draft_email through log_to_crm.
    assert parse_workflow(outbound()).step("send_email").needs == ("log_to_crm",)


def test_template_reading_undeclared_input_or_malformed():
    data = outbound()
    data["steps"][1]["input"]["note"] = "{{ input.phone }}"
    assert errors_of(data) == ["step 'log_to_crm' reads input.phone, which the workflow input lacks"]
    data["steps"][1]["input"]["note"] = "{{ steps.draft_email.subject }}"
    assert errors_of(data) == [
        "step 'log_to_crm': bad template expression {{ steps.draft_email.subject }}: "
        "steps are read as steps.NAME.output[.FIELD]"
    ]


@pytest.mark.parametrize("bad", ["Draft", "1draft", "draft-email", "draft email"])
def test_names_must_be_lowercase_identifiers(bad: str):
    data = outbound()
    data["steps"][0]["name"] = bad
    assert errors_of(data)[0] == f"step {bad!r}: invalid step name {bad!r}: must match ^[a-z][a-z0-9_]*$"
    data = outbound() | {"name": bad}
    assert errors_of(data) == [f"invalid workflow name {bad!r}: must match ^[a-z][a-z0-9_]*$"]


def test_typos_types_and_bounds_are_located():
    data = outbound()
    data["steps"][1]["need"] = ["draft_email"]
    data["steps"][2]["retry"] = {"max_attempts": 0}
    assert errors_of(data) == [
        "step 'log_to_crm', field 'need': unknown field",
        "step 'send_email', field 'retry.max_attempts': Input should be greater than or equal to 1",
    ]
    data = outbound()
    data["input"]["lead_name"] = "str"
    del data["version"]
    assert errors_of(data) == [
        "field 'version': missing required field",
        "input field 'lead_name' has unknown type 'str'; expected one of string, number, integer, boolean, "
        "object, array",
    ]


# --- templates ---------------------------------------------------------------------------------------

CONTEXT = build_context(
    {"lead_email": "ada@example.com", "tags": ["vip"], "address": {"city": "London"}, "seats": 3},
    {"draft_email": {"subject": "Hi", "body": "Hello Ada", "score": 0.9, "lines": ["a", "b"]}},
)


def test_single_reference_keeps_its_json_type():
    assert render("{{ input.seats }}", CONTEXT) == 3
    assert render("{{input.tags}}", CONTEXT) == ["vip"]
    assert render("{{ steps.draft_email.output }}", CONTEXT)["score"] == 0.9
    assert render("{{ input.address.city }}", CONTEXT) == "London"


def test_interpolation_substitutes_strings():
    assert (
        render("Dear {{ input.address.city }} ({{ input.seats }} seats)", CONTEXT) == "Dear London (3 seats)"
    )
    assert render("lines: {{ steps.draft_email.output.lines }}", CONTEXT) == 'lines: ["a", "b"]'
    assert render_text("{{ input.address }}", CONTEXT) == '{"city": "London"}'


def test_nested_dicts_and_lists_render_recursively():
    value = {
        "to": "{{ input.lead_email }}",
        "meta": [{"s": "{{ steps.draft_email.output.lines.1 }}"}, 7, None],
    }
    assert render(value, CONTEXT) == {"to": "ada@example.com", "meta": [{"s": "b"}, 7, None]}


def test_missing_path_names_the_path():
    with pytest.raises(TemplateError, match="'steps.draft_email.output.title' not found"):
        render({"x": ["{{ steps.draft_email.output.title }}"]}, CONTEXT)
    with pytest.raises(TemplateError, match="'steps.send_email.output' not found"):
        render("x {{ steps.send_email.output }}", CONTEXT)


def test_malformed_templates_are_rejected():
    for bad in ("{{ __import__('os') }}", "{{ input }}", "{{ foo.bar }}", "Hi {{ input.x"):
        with pytest.raises(TemplateError):
            render(bad, CONTEXT)


def test_references_lists_step_names():
    value = {"a": "{{ steps.x.output.f }} {{ input.y }}", "b": ["{{ steps.z.output }}"], "c": 1}
    assert references(value) == {"x", "z"}


# --- graph -------------------------------------------------------------------------------------------


def test_fan_out_then_join():
    spec = load_workflow(ENRICHMENT)
    assert ready_steps(spec, set(), set()) == ["research_company", "research_person"]
    assert ready_steps(spec, set(), {"research_company"}) == ["research_person"]
    assert ready_steps(spec, {"research_company"}, {"research_company", "research_person"}) == []
    both = {"research_company", "research_person"}
    assert ready_steps(spec, both, both) == ["summarize"]
    assert ready_steps(spec, both | {"summarize"}, both | {"summarize"}) == ["log_summary"]
    assert topological_order(spec) == ["research_company", "research_person", "summarize", "log_summary"]


def test_mermaid_draws_every_node_and_edge():
    spec = load_workflow(ENRICHMENT)
    chart = mermaid(spec)
    assert chart.startswith("flowchart TD\n")
    assert '    research_company["research_company<br/>llm: sim-small"]' in chart
    assert '    log_summary["log_summary<br/>tool: crm@1"]' in chart
    for step in spec.steps:
        assert f"    {step.name}[" in chart
        for dep in step.needs:
            assert f"    {dep} --> {step.name}\n" in chart
    assert chart.count("-->") == 3
    assert "class log_summary side_effect" in chart


# --- run input ---------------------------------------------------------------------------------------


def test_validate_input_accepts_a_good_input_with_extras():
    validate_input(load_workflow(OUTBOUND), {"lead_email": "a@b.c", "lead_name": "A", "product": "P", "x": 1})


def test_validate_input_lists_missing_fields_and_wrong_types():
    spec = load_workflow(OUTBOUND)
    with pytest.raises(InvalidInput) as exc:
        validate_input(spec, {"lead_email": 42, "lead_name": None})
    assert exc.value.problems == [
        "missing field 'product'",
        "field 'lead_email' should be string, got integer",
        "field 'lead_name' should be string, got null",
    ]
    assert str(exc.value).startswith("invalid input for workflow 'outbound_email': missing field 'product'")


def test_validate_input_follows_json_types():
    data = outbound()
    data["input"] = {"n": "number", "i": "integer", "b": "boolean", "o": "object", "a": "array"}
    data["steps"] = data["steps"][:1]
    data["steps"][0]["prompt"] = "go"
    spec = parse_workflow(data)
    validate_input(spec, {"n": 1, "i": 2, "b": False, "o": {}, "a": []})  # an integer is a number
    with pytest.raises(InvalidInput) as exc:
        validate_input(spec, {"n": True, "i": 2.5, "b": 1, "o": [], "a": {}})
    assert exc.value.problems == [
        "field 'n' should be number, got boolean",
        "field 'i' should be integer, got number",
        "field 'b' should be boolean, got integer",
        "field 'o' should be object, got array",
        "field 'a' should be array, got object",
    ]


def _chain(n: int, close: bool = False) -> dict[str, Any]:
    """n llm steps, each needing the one before (the first the last, when `close`), listed last first so
    that a depth-first walk from the first listed step goes the whole length of the chain."""
    step = {"kind": "llm", "model": "m", "prompt": "p"}
    steps: list[dict[str, Any]] = [{"name": f"s{i}", **step} for i in range(n)]
    for i in range(1, n):  # each reads the step before it and the first: ancestry checked all along
        steps[i]["needs"] = [f"s{i - 1}"]
        steps[i]["prompt"] = f"{{{{ steps.s{i - 1}.output.text }}}} {{{{ steps.s0.output.text }}}}"
    if close:
        steps[0]["needs"] = [f"s{n - 1}"]
    return {"name": "long_chain", "version": 1, "steps": steps[::-1]}


def test_a_chain_of_5000_steps_validates_orders_and_draws_without_recursion_errors():
    data = _chain(5000)
    data["steps"][-1]["prompt"] = "{{ steps.s1.output.text }}"  # s0 reading a later step: refused
    assert errors_of(data) == ["step 's0' reads steps.s1 but does not depend on 's1' (add it to needs)"]
    spec = parse_workflow(_chain(5000))
    assert topological_order(spec)[:3] == ["s0", "s1", "s2"] and len(topological_order(spec)) == 5000
    assert mermaid(spec).count("-->") == 4999


def test_a_cycle_through_5000_steps_is_found_without_recursion_errors():
    [problem] = errors_of(_chain(5000, close=True))
    assert problem.startswith("cycle in needs: s4999 -> s4998 -> s4997") and problem.endswith("s0 -> s4999")
