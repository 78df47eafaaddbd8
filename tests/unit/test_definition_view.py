"""The workflow view over files and registered records, with a reader fake (no broker)."""

from __future__ import annotations

import json

import pytest

from keel.definitions.kinds import content_of
from keel.definitions.reader import DefinitionsReader
from keel.definitions.record import Candidate, digest
from keel.definitions.view import WorkflowView
from keel.workflows import Catalog, UnknownWorkflow, WorkflowSpec

BASE = Catalog.load().get("outbound_email")


def version(n: int, description: str = "") -> WorkflowSpec:
    return BASE.model_copy(update={"version": n, "description": description})


class FakeReader(DefinitionsReader):
    """Holds records; `refresh` makes the `pending` ones visible, as reading to the end would."""

    def __init__(self, records: list[WorkflowSpec], pending: list[WorkflowSpec] = ()) -> None:  # noqa: B006
        self._all: list[Candidate] = []
        self.generation, self.refreshes = 0, 0
        self._pending = list(pending)
        for spec in records:
            self._add(spec)

    def _add(self, spec: WorkflowSpec) -> None:
        content = content_of(spec)
        self._all.append(
            Candidate("workflow", spec.name, spec.version, digest(content), len(self._all), content)
        )
        self.generation += 1

    def records(self) -> list[Candidate]:
        return list(self._all)

    def refresh(self, timeout_s: float) -> bool:
        self.refreshes += 1
        for spec in self._pending:
            self._add(spec)
        self._pending = []
        return True


def test_an_unseen_version_is_looked_for_after_a_refresh_then_refused():
    reader = FakeReader([version(1, "one")], pending=[version(2, "two")])
    view = WorkflowView(Catalog({}), reader)
    assert view.get("outbound_email", 2).description == "two" and reader.refreshes == 1
    assert view.get("outbound_email", 1).description == "one" and reader.refreshes == 1  # seen: no refresh
    with pytest.raises(UnknownWorkflow, match="has no version 3"):
        view.get("outbound_email", 3)
    assert reader.refreshes == 2


def test_registered_versions_join_the_files_and_win_a_conflict():
    reader = FakeReader([version(1, "registered"), version(2, "two")])
    view = WorkflowView(Catalog({("outbound_email", 1): version(1, "file")}), reader)
    assert view.versions("outbound_email") == [1, 2] and view.get("outbound_email").version == 2
    assert view.get("outbound_email", 1).description == "registered" and len(view.conflicts) == 1
    assert json.loads(reader.records()[0].content)["description"] == "registered"


def test_without_a_reader_the_view_is_the_files():
    view = WorkflowView(Catalog.load())
    assert view.names() == ["lead_enrichment", "outbound_email", "support_triage"]
    with pytest.raises(UnknownWorkflow):
        view.get("nope")


def test_a_file_naming_an_unknown_tool_version_is_refused_loudly():
    send = BASE.steps[2].model_copy(update={"tool": "email@5"})
    broken = BASE.model_copy(update={"version": 4, "steps": (*BASE.steps[:2], send)})
    view = WorkflowView(Catalog({("outbound_email", 1): BASE, ("outbound_email", 4): broken}), FakeReader([]))
    assert view.versions("outbound_email") == [1]
    assert len(view.conflicts) == 1 and "unknown tool 'email@5'" in view.conflicts[0]
