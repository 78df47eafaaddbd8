"""The scheduler learns each tool's idempotency mode from the loaded definitions, never from adapter
code: no module of the scheduler imports the adapters service."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

from keel.schemas import REPO_ROOT
from keel.settings import Settings
from keel.workflows import Catalog
from services.scheduler.service import SchedulerProcessor

# The workflow files alone: the live view would also follow keel.definitions (the registered tools come
# through it), and with no broker here its start waits 5 s for the topic's end. The tool files are read
# either way.
FILES = Catalog.configured()

YAML_ONLY = """\
name: ticket
version: 2
description: Open a support ticket.
input_schema: {type: object, properties: {title: {type: string}}}
output_schema: {type: object, required: [ticket_id], properties: {ticket_id: {type: string}}}
external_id: ticket_id
request: {path: /v1/tickets}
idempotency: {mode: none}
"""


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_no_scheduler_module_imports_the_adapters() -> None:
    offenders = {
        str(p.relative_to(REPO_ROOT)): sorted(
            m for m in imported_modules(p) if m.startswith("services.adapters")
        )
        for p in (REPO_ROOT / "services" / "scheduler").glob("*.py")
    }
    assert {p: m for p, m in offenders.items() if m} == {}


def test_the_scheduler_reads_modes_from_the_definitions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ticket.v2.yaml").write_text(textwrap.dedent(YAML_ONLY))
    monkeypatch.setenv("KEEL_TOOL_DIRS", str(tmp_path))
    processor = SchedulerProcessor(Settings(), FILES)
    assert processor.tool_mode("email@1") == "provider_key" and processor.tool_mode("crm@1") == "lookup"
    assert processor.tool_mode("ticket@2") == "none"
    assert processor.tool_mode("sms@1") is None  # unknown: read as none, the safe reading


def test_a_bad_definition_fails_the_schedulers_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ticket.v2.yaml").write_text(textwrap.dedent(YAML_ONLY).replace("mode: none", "mode: lookup"))
    monkeypatch.setenv("KEEL_TOOL_DIRS", str(tmp_path))
    with pytest.raises(ValueError, match=r"ticket\.v2\.yaml:8: \$\.idempotency: mode lookup needs `lookup`"):
        SchedulerProcessor(Settings(), FILES)


def test_the_scheduler_reads_key_retention_from_the_definitions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEL_TOOL_DIRS", str(REPO_ROOT / "docs" / "examples" / "tools"))
    processor = SchedulerProcessor(Settings(), FILES)
    assert processor.key_retention("refund@1") == 86400 and processor.key_retention("email@1") is None
