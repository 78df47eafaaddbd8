"""docs/tools.md shows the very files the tests run: the example tool definition and its workflow."""

from __future__ import annotations

import re

from keel.schemas import REPO_ROOT
from keel.tooldefs import load_definition
from keel.workflows.catalog import load_workflow

DOC = REPO_ROOT / "docs" / "tools.md"
EXAMPLE = REPO_ROOT / "docs" / "examples" / "tools" / "refund.v1.yaml"
WORKFLOW = REPO_ROOT / "tests" / "workflows" / "refund_once.v1.yaml"


def yaml_blocks() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", DOC.read_text(), flags=re.S)


def test_the_documented_definition_is_the_one_the_tests_load() -> None:
    assert EXAMPLE.read_text() in yaml_blocks()
    definition = load_definition(EXAMPLE)
    assert definition.tool == "refund@1" and definition.idempotency.mode == "provider_key"


def test_the_documented_workflow_is_the_one_the_tests_run() -> None:
    assert WORKFLOW.read_text() in yaml_blocks()
    [step] = load_workflow(WORKFLOW).steps
    assert step.tool == "refund@1"
