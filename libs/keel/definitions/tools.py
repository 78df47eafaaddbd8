"""The tools a service knows: the files loaded at start-up plus the versions registered on the topic.

ToolRegistry-compatible for what services ask (`get`, `loaded`, `names`, `in`, `mode`, `key_retention`).
A registered version is immutable. A tool file and a registered record of the same name@version with
different content is a conflict: the registered record wins (it is what every other process uses) and
the file is refused, logged as an error each time the view is rebuilt."""

from __future__ import annotations

import json
import logging
import threading

from keel.definitions.kinds import content_of
from keel.definitions.reader import DefinitionsReader
from keel.definitions.record import Candidate, digest
from keel.definitions.toolkind import parse_tool
from keel.settings import Settings
from keel.tooldefs import LoadedTool, ToolDefinition, ToolRegistry, UnknownTool
from keel.topics import DEFINITIONS

log = logging.getLogger(__name__)


def tool_digest(definition: ToolDefinition) -> str:
    """The digest a definition is registered under (canonical JSON, defaults left out)."""
    return digest(content_of(definition))


class ToolView:
    def __init__(
        self, files: ToolRegistry, reader: DefinitionsReader | None = None, wait_s: float = 5.0
    ) -> None:
        self.files, self.reader, self.wait_s = files, reader, wait_s
        self._lock = threading.Lock()
        self._generation = -1
        self._tools: dict[str, LoadedTool] = {n: files.loaded(n) for n in files.names()}
        self._parsed: dict[str, ToolDefinition] = {}  # by digest: a record is parsed once
        self.conflicts: list[str] = []

    def _current(self) -> dict[str, LoadedTool]:
        if self.reader is None:
            return self._tools
        with self._lock:
            if self.reader.generation != self._generation:
                self._generation = self.reader.generation
                self._tools = self._merge(self.reader)
            return self._tools

    def _merge(self, reader: DefinitionsReader) -> dict[str, LoadedTool]:
        tools = {n: self.files.loaded(n) for n in self.files.names()}
        conflicts = []
        for (name, version), record in sorted(reader.definitions("tool").items()):
            tool = f"{name}@{version}"
            definition = self._parsed.get(record.digest)
            if definition is None:
                try:
                    definition = self._parsed[record.digest] = parse_tool(json.loads(record.content))
                except ValueError as exc:  # validated at apply; a newer writer may know more than us
                    log.error("definitions: registered tool %s cannot be read: %s", tool, exc)
                    continue
            held = tools.get(tool)
            if held is not None and tool_digest(held.definition) != record.digest:
                conflicts.append(
                    f"the tool file {held.source} ({tool}) differs from the registered {record.digest}: "
                    "the file is refused, the registered definition is used"
                )
                log.error("definitions: %s", conflicts[-1])
            tools[tool] = LoadedTool(definition, f"registered by {record.applied_by}", record.digest)
        self.conflicts = conflicts
        return tools

    def _find(self, tool: str) -> LoadedTool | None:
        """The tool, looked for once more after reading the topic to its end (bounded by `wait_s`)
        when it is not known yet: it may have been registered a moment ago."""
        held = self._current().get(tool)
        if held is None and self.reader is not None and self.reader.refresh(self.wait_s):
            held = self._current().get(tool)
        return held

    def loaded(self, tool: str) -> LoadedTool:
        held = self._find(tool)
        if held is None:
            raise UnknownTool(f"unknown tool {tool!r}; known tools: {self.names()}")
        return held

    def get(self, tool: str) -> ToolDefinition:
        return self.loaded(tool).definition

    def record(self, tool: str) -> Candidate | None:
        """The registered record behind name@version; None for a tool only a file defines."""
        if self.reader is None:
            return None
        name, _, version = tool.partition("@")
        return self.reader.definitions("tool").get((name, int(version))) if version.isdigit() else None

    def names(self) -> list[str]:
        return sorted(self._current())

    def __contains__(self, tool: object) -> bool:
        return isinstance(tool, str) and self._find(tool) is not None

    def mode(self, tool: str) -> str | None:
        """The idempotency mode of `tool`; None (read as `none`, the safe reading) when unknown."""
        held = self._find(tool)
        return None if held is None else held.definition.idempotency.mode

    def key_retention(self, tool: str) -> float | None:
        held = self._find(tool)
        return None if held is None else held.definition.idempotency.key_retention_s

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()


def live_tools(
    settings: Settings, topic: str = DEFINITIONS, reader: DefinitionsReader | None = None, wait_s: float = 5.0
) -> ToolView:
    """The files (ToolRegistry.configured: a bad file fails here, loudly) plus the registered tools,
    followed in the background (by `reader` when the process follows the topic already)."""
    return ToolView(ToolRegistry.configured(), reader or DefinitionsReader(settings, topic), wait_s)
