"""docs/workers.md shows the very files the tests run: the worker module, its definition, its workflow,
and the real `keel-worker --help`."""

from __future__ import annotations

import re

from keel.schemas import REPO_ROOT
from keel.worker.cli import parser

DOC = (REPO_ROOT / "docs" / "workers.md").read_text()


def blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", DOC, flags=re.S)


def test_the_documented_module_definition_and_workflow_are_the_ones_the_tests_run() -> None:
    assert (REPO_ROOT / "tests" / "workers" / "refunds.py").read_text() in blocks("python")
    assert (REPO_ROOT / "tests" / "tools" / "issue_refund.v1.yaml").read_text() in blocks("yaml")
    assert (REPO_ROOT / "tests" / "workflows" / "worker_refund.v1.yaml").read_text() in blocks("yaml")


def test_the_documented_usage_is_the_commands(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("COLUMNS", "80")
    usage = parser().format_usage()
    assert usage.strip() in DOC
