"""The tool view over tool files and registered tool records, with a reader fake (no broker)."""

from __future__ import annotations

import pytest

from keel.definitions.kinds import content_of
from keel.definitions.reader import DefinitionsReader
from keel.definitions.record import Candidate, digest
from keel.definitions.tools import ToolView, tool_digest
from keel.schemas import REPO_ROOT
from keel.tooldefs import ToolDefinition, ToolRegistry, UnknownTool, load_definition

REFUND = load_definition(REPO_ROOT / "docs" / "examples" / "tools" / "refund.v1.yaml")
FILES = ToolRegistry.configured()  # tools/: email@1, crm@1, ...


def refund(version: int, description: str = "Refund.") -> ToolDefinition:
    return REFUND.model_copy(update={"version": version, "description": description})


class FakeReader(DefinitionsReader):
    """Holds tool records; `refresh` makes the `pending` ones visible, as reading to the end would."""

    def __init__(self, records: list[ToolDefinition], pending: list[ToolDefinition] = ()) -> None:  # noqa: B006
        self._all: list[Candidate] = []
        self.generation, self.refreshes = 0, 0
        self._pending = list(pending)
        for definition in records:
            self.add(definition)

    def add(self, definition: ToolDefinition, content: str | None = None) -> None:
        content = content or content_of(definition)
        self._all.append(
            Candidate(
                "tool", definition.name, definition.version, digest(content), len(self._all), content, "ops"
            )
        )
        self.generation += 1

    def records(self) -> list[Candidate]:
        return list(self._all)

    def refresh(self, timeout_s: float) -> bool:
        self.refreshes += 1
        for definition in self._pending:
            self.add(definition)
        self._pending = []
        return True


def test_registered_tools_join_the_files_with_their_modes():
    view = ToolView(FILES, FakeReader([refund(2)]))
    assert view.names() == sorted([*FILES.names(), "refund@2"])
    assert "refund@2" in view and "email@1" in view
    assert view.get("refund@2") == refund(2)
    assert view.mode("refund@2") == REFUND.idempotency.mode
    assert view.key_retention("refund@2") == REFUND.idempotency.key_retention_s
    assert view.mode("email@1") == FILES.mode("email@1")
    assert view.loaded("refund@2").source == "registered by ops"
    assert view.loaded("refund@2").digest == tool_digest(refund(2))
    assert view.record("refund@2") is not None and view.record("email@1") is None


def test_a_tool_registered_after_the_view_was_built_is_found_after_one_refresh():
    reader = FakeReader([], pending=[refund(3, "three")])
    view = ToolView(FILES, reader)
    assert view.names() == FILES.names()
    assert view.mode("refund@3") == REFUND.idempotency.mode and reader.refreshes == 1
    assert view.get("refund@3").description == "three" and reader.refreshes == 1  # seen: no refresh
    assert view.mode("nope@1") is None and reader.refreshes == 2  # unknown: the safe reading
    with pytest.raises(UnknownTool, match="refund@3"):
        view.get("nope@1")


def test_a_file_and_a_registered_record_that_differ_is_a_loud_conflict_the_record_wins():
    email = FILES.get("email@1")
    other = email.model_copy(update={"description": "Other email."})
    view = ToolView(FILES, FakeReader([other]))
    assert view.get("email@1").description == "Other email."
    [conflict] = view.conflicts
    assert "email@1" in conflict and "the file is refused" in conflict
    same = ToolView(FILES, FakeReader([email]))
    assert same.get("email@1") == email and same.conflicts == []


def test_a_record_that_cannot_be_read_is_skipped_not_fatal():
    reader = FakeReader([refund(2)])
    reader.add(refund(4), content='{"name": "refund", "version": 4}')
    view = ToolView(FILES, reader)
    assert "refund@2" in view and view.mode("refund@4") is None


def test_without_a_reader_the_view_is_the_files():
    view = ToolView(FILES)
    assert view.names() == FILES.names() and view.record("email@1") is None
