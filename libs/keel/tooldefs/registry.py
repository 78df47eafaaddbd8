"""The tool definitions a process has loaded, by `name@version`: from tools/ and KEEL_TOOL_DIRS."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from keel.schemas import REPO_ROOT
from keel.tooldefs.load import ToolDefinitionError, load_definition
from keel.tooldefs.model import ToolDefinition

TOOL_DIR = REPO_ROOT / "tools"


def digest(definition: ToolDefinition) -> str:
    """The content hash of a definition (canonical JSON of every field): part of its identity, so one
    name@version can never mean two contracts."""
    canonical = json.dumps(definition.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class LoadedTool:
    definition: ToolDefinition
    source: str  # the file it was read from
    digest: str


class UnknownTool(LookupError):
    """A tool name no loaded definition serves."""


class ToolRegistry:
    """Immutable once built: every definition valid, every name@version one content."""

    def __init__(self, tools: Iterable[LoadedTool] = ()) -> None:
        self._tools: dict[str, LoadedTool] = {}
        problems: list[str] = []
        for loaded in tools:
            tool = loaded.definition.tool
            held = self._tools.get(tool)
            if held is not None and held.digest != loaded.digest:
                problems.append(
                    f"{loaded.source}: {tool} is already defined by {held.source} with different content "
                    f"({held.digest[:19]}... vs {loaded.digest[:19]}...): "
                    "a changed contract needs a new version"
                )
            elif held is None:
                self._tools[tool] = loaded
        if problems:
            raise ToolDefinitionError("", [f"{p}" for p in problems])

    @classmethod
    def from_files(cls, paths: Iterable[Path]) -> ToolRegistry:
        """Every file loaded, and every problem of every file reported at once."""
        loaded, problems = [], []
        for path in paths:
            try:
                definition = load_definition(path)
            except ToolDefinitionError as exc:
                problems.append(str(exc))
                continue
            loaded.append(LoadedTool(definition, str(path), digest(definition)))
        if problems:
            raise ToolDefinitionError("", problems)
        return cls(loaded)

    @classmethod
    def from_dirs(cls, dirs: Iterable[Path]) -> ToolRegistry:
        dirs = [Path(d) for d in dirs]
        missing = [f"{d}: not a directory (KEEL_TOOL_DIRS)" for d in dirs if not d.is_dir()]
        if missing:  # a misspelt directory would silently drop every tool in it
            raise ToolDefinitionError("", missing)
        return cls.from_files(p for d in dirs for p in sorted(d.glob("*.yaml")))

    @classmethod
    def configured(cls) -> ToolRegistry:
        """tools/ plus each directory of KEEL_TOOL_DIRS (colon-separated); a bad file raises."""
        return cls.from_dirs(tool_dirs())

    def get(self, tool: str) -> ToolDefinition:
        try:
            return self._tools[tool].definition
        except KeyError:
            raise UnknownTool(f"unknown tool {tool!r}; known tools: {sorted(self._tools)}") from None

    def loaded(self, tool: str) -> LoadedTool:
        self.get(tool)
        return self._tools[tool]

    def names(self) -> list[str]:
        return sorted(self._tools)

    def __contains__(self, tool: object) -> bool:
        return tool in self._tools

    def key_retention(self, tool: str) -> float | None:
        """How long the provider of `tool` remembers idempotency keys (s); None: no limit declared."""
        held = self._tools.get(tool)
        return None if held is None else held.definition.idempotency.key_retention_s

    def mode(self, tool: str) -> str | None:
        """The idempotency mode of `tool`; None (read as `none`, the safe reading) when unknown."""
        held = self._tools.get(tool)
        return None if held is None else held.definition.idempotency.mode


def tool_dirs() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("KEEL_TOOL_DIRS", "").split(":") if p.strip()]
    return [TOOL_DIR, *extra]
