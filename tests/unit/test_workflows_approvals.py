"""Workflow fields for approvals and fallbacks (docs/quarantine.md): what loads, and what is refused."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from keel.workflows import (
    DEFAULT_APPROVAL_TIMEOUT_MS,
    Catalog,
    WorkflowError,
    load_workflow,
    mermaid,
    parse_workflow,
    ready_steps,
)

SOURCE = "workflows/broken.v1.yaml"
TEST_WORKFLOWS = Path(__file__).parents[1] / "workflows"


def example() -> dict[str, Any]:
    """The example of docs/quarantine.md, with the lookup it reads."""
    return copy.deepcopy(
        {
            "name": "refund_approved",
            "version": 1,
            "input": {"customer": "string", "charge_id": "string"},
            "steps": [
                {"name": "lookup", "kind": "tool", "tool": "crm@1", "input": {"id": "{{ input.customer }}"}},
                {
                    "name": "approve_refund",
                    "kind": "approval",
                    "needs": ["lookup"],
                    "prompt": "Refund {{ steps.lookup.output.amount }} to {{ input.customer }}?",
                    "approval": {"timeout_ms": 3600000, "on_timeout": "deny"},
                },
                {
                    "name": "refund",
                    "kind": "tool",
                    "tool": "refund@1",
                    "needs": ["approve_refund"],
                    "input": {"charge_id": "{{ input.charge_id }}", "amount_cents": 500},
                    "requires_approval": True,
                    "approval": {"timeout_ms": 600000, "on_timeout": {"fallback": "notify_manager"}},
                    "on_quarantine": {"fallback": "notify_manager"},
                    "on_failure": {"fallback": "notify_manager"},
                },
                {
                    "name": "notify_manager",
                    "kind": "tool",
                    "tool": "email@1",
                    "needs": ["lookup"],
                    "fallback_only": True,
                    "input": {"to": "manager@example.com", "subject": "refund for {{ input.customer }}"},
                },
            ],
        }
    )


def step(data: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(s for s in data["steps"] if s["name"] == name)
    return found


def errors_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(WorkflowError) as exc:
        parse_workflow(data, SOURCE)
    return exc.value.problems


def test_the_documented_example_loads_with_its_policies():
    spec = parse_workflow(example())
    ask, refund = spec.step("approve_refund"), spec.step("refund")
    assert ask.approval_policy is not None and ask.approval_policy.timeout_rule == "deny"
    assert (
        refund.approval_policy is not None
        and refund.approval_policy.timeout_rule == "fallback:notify_manager"
    )
    assert refund.fallbacks == {
        "on_quarantine": "notify_manager",
        "on_failure": "notify_manager",
        "approval.on_timeout": "notify_manager",
    }
    assert spec.step("lookup").approval_policy is None


def test_an_approval_without_a_policy_waits_24_hours_and_then_denies():
    data = example()
    del step(data, "approve_refund")["approval"]
    policy = parse_workflow(data).step("approve_refund").approval_policy
    assert policy is not None and policy.timeout_ms == DEFAULT_APPROVAL_TIMEOUT_MS == 24 * 3600 * 1000
    assert policy.on_timeout == "deny"


def test_fallback_only_steps_start_only_once_chosen():
    spec = parse_workflow(example())
    assert ready_steps(spec, {"lookup"}, {"lookup"}) == ["approve_refund"]
    assert ready_steps(spec, {"lookup"}, {"lookup", "approve_refund"}) == []
    assert ready_steps(spec, {"lookup"}, {"lookup", "approve_refund"}, {"notify_manager"}) == [
        "notify_manager"
    ]


def test_mermaid_draws_fallback_edges():
    drawing = mermaid(parse_workflow(example()))
    assert "refund -. on_quarantine .-> notify_manager" in drawing
    assert "approval, fallback only" not in drawing and "tool: email@1, fallback only" in drawing


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda d: step(d, "refund").update(on_failure={"fallback": "nobody"}),
            "step 'refund' on_failure falls back to unknown step 'nobody'",
        ),
        (
            lambda d: step(d, "refund").update(on_failure={"fallback": "refund"}),
            "step 'refund' on_failure falls back to itself",
        ),
        (
            lambda d: step(d, "refund").update(on_failure={"fallback": "lookup"}),
            "step 'refund' on_failure falls back to 'lookup', which is not `fallback_only: true` "
            "(it would run anyway)",
        ),
        (
            lambda d: step(d, "notify_manager").update(needs=["approve_refund", "refund"]),
            "step 'refund' on_quarantine falls back to 'notify_manager', which needs ['refund'] that "
            "'refund' does not depend on (its inputs might not exist)",
        ),
        (
            lambda d: d["steps"].append(
                {"name": "after", "kind": "tool", "tool": "crm@1", "needs": ["notify_manager"]}
            ),
            "step 'after' needs fallback-only step 'notify_manager': "
            "read it through the step it stands in for",
        ),
        (
            lambda d: d["steps"].append(
                {"name": "spare", "kind": "tool", "tool": "crm@1", "fallback_only": True}
            ),
            "fallback-only step 'spare' is no step's fallback (it could never run)",
        ),
    ],
)
def test_fallback_graph_errors_name_the_step_and_the_rule(change: Any, expected: str):
    data = example()
    change(data)
    assert expected in errors_of(data)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("requires_approval", True, "step 'lookup': llm step must not set requires_approval"),
        ("approval", {"timeout_ms": 10}, "step 'lookup': llm step must not set approval"),
    ],
)
def test_approval_fields_belong_to_approval_and_tool_steps(field: str, value: Any, expected: str):
    data = example()
    lookup = step(data, "lookup")
    del lookup["tool"], lookup["input"]
    lookup.update(kind="llm", model="sim-small", prompt="hi")
    step(data, "lookup")[field] = value
    assert errors_of(data) == [expected]


def test_a_tool_step_with_an_approval_policy_must_require_approval():
    data = example()
    step(data, "refund")["requires_approval"] = False
    assert errors_of(data) == ["step 'refund': tool step sets `approval` without `requires_approval: true`"]


def test_an_approval_step_needs_a_prompt_and_takes_no_tool_fields():
    data = example()
    del step(data, "approve_refund")["prompt"]
    assert errors_of(data) == [
        "step 'approve_refund': approval step needs `prompt` (what the human is asked)"
    ]
    data = example()
    step(data, "approve_refund")["input"] = {"x": 1}
    assert errors_of(data) == ["step 'approve_refund': approval step must not set input"]
    data = example()
    step(data, "approve_refund")["on_quarantine"] = {"fallback": "notify_manager"}
    assert errors_of(data) == [
        "step 'approve_refund': approval step must not set on_quarantine: it is never quarantined"
    ]


def test_an_agent_step_declares_no_fallback():
    data = example()
    data["steps"].append(
        {
            "name": "helper",
            "kind": "agent",
            "agent": "a1",
            "model": "sim-small",
            "prompt": "help",
            "tools": ["crm@1"],
            "on_failure": {"fallback": "notify_manager"},
        }
    )
    assert errors_of(data) == ["step 'helper': agent step must not set on_quarantine or on_failure"]


@pytest.mark.parametrize(
    ("approval", "problem"),
    [
        ({"on_timeout": "allow"}, "approval.on_timeout"),
        ({"timeout_ms": 0}, "approval.timeout_ms"),
        ({"timeout": 5}, "approval.timeout"),
    ],
)
def test_approval_policy_fields_are_checked(approval: dict[str, Any], problem: str):
    data = example()
    step(data, "approve_refund")["approval"] = approval
    assert any(problem in e for e in errors_of(data)), errors_of(data)


def test_the_test_workflows_for_approvals_and_fallbacks_load():
    catalog = Catalog.load(TEST_WORKFLOWS)
    approve = catalog.get("approve_refund", 1)
    refund = approve.step("refund")
    assert refund.requires_approval and refund.approval_policy is not None
    assert (refund.approval_policy.timeout_ms, refund.approval_policy.timeout_rule) == (4000, "deny")
    fallback = catalog.get("refund_with_fallback", 1)
    assert fallback.step("refund").fallbacks == {"on_quarantine": "notify"}
    assert fallback.step("notify").fallback_only
    assert load_workflow(TEST_WORKFLOWS / "refund_with_fallback.v1.yaml") == fallback


def test_fallback_problems_are_located_at_the_field_that_declares_them():
    data = example()
    step(data, "refund")["on_failure"] = {"fallback": "nobody"}
    step(data, "refund")["approval"]["on_timeout"] = {"fallback": "refund"}
    with pytest.raises(WorkflowError) as exc:
        parse_workflow(data, SOURCE)
    located = dict(zip(exc.value.problems, exc.value.locations, strict=True))
    assert located["step 'refund' on_failure falls back to unknown step 'nobody'"] == (
        "steps",
        2,
        "on_failure",
    )
    assert located["step 'refund' approval.on_timeout falls back to itself"] == (
        "steps",
        2,
        "approval",
        "on_timeout",
    )
