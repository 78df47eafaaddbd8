"""`keel tools list | show NAME@VERSION | validate FILE... | apply FILE`: the tool contracts."""

from __future__ import annotations

import argparse
from typing import Any

import yaml

from keel.settings import Settings
from keel.tooldefs import (
    ToolDefinition,
    ToolDefinitionError,
    ToolRegistry,
    digest,
    load_definition,
    tool_dirs,
)
from keel.topics import DEFINITIONS
from keel_ops.cli_workflows import apply_file
from keel_ops.stack import say

HELP = (
    "tool contracts: list, show NAME@VERSION, validate FILE... (tools/ and KEEL_TOOL_DIRS), "
    "apply FILE (validate and register a tool version at runtime; a version never changes)"
)


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", nargs="?", choices=["list", "show", "validate", "apply"], default="list")
    p.add_argument("targets", nargs="*", help="show: NAME@VERSION; validate: FILE...; apply: one FILE")


def _summary(definition: ToolDefinition) -> str:
    effects = "side effects" if definition.side_effects else "read-only"
    fee = f"  ${definition.fee_usd:g}/call" if definition.fee_usd else ""
    approval = "  needs approval" if definition.requires_approval else ""
    mode = definition.idempotency.mode
    return f"{definition.tool:<16} {mode:<13} {effects:<12}{fee}{approval}  {definition.description.strip()}"


def _contract(registry: ToolRegistry, tool: str) -> str:
    loaded = registry.loaded(tool)
    shown: dict[str, Any] = {"source": loaded.source, "digest": loaded.digest}
    shown.update(loaded.definition.model_dump(mode="json", exclude_none=True))
    return yaml.safe_dump(shown, sort_keys=False, allow_unicode=True).rstrip()


def _validate(paths: list[str]) -> int:
    if not paths:
        raise ValueError("keel tools validate needs at least one FILE")
    failed = 0
    for path in paths:
        try:
            definition = load_definition(path)
        except ToolDefinitionError as exc:
            failed += 1
            print(exc)
            continue
        print(f"{path}: ok: {definition.tool} ({digest(definition)})")
    return 1 if failed else 0


def apply_local_files(settings: Settings, topic: str = DEFINITIONS) -> int:
    """What `keel up` does: apply every tool file (tools/ and KEEL_TOOL_DIRS); returns the refusals."""
    ToolRegistry.configured()  # every file must load (and no two disagree) before any is applied
    refused = 0
    for directory in tool_dirs():
        for path in sorted(directory.glob("*.yaml")):
            refused += not apply_file(settings, str(path), "keel up", topic, kind="tool")
    if refused:
        say(f"{refused} tool file(s) REFUSED: the registered definitions are used; see above")
    return refused


def cmd_tools(settings: Settings, args: argparse.Namespace) -> int:
    if args.action == "apply":
        if len(args.targets) != 1:
            raise ValueError("keel tools apply needs one FILE")
        return 0 if apply_file(settings, args.targets[0], kind="tool") else 1
    if args.action == "validate":
        return _validate(args.targets)
    registry = ToolRegistry.configured()  # a bad definition anywhere is refused here, by file and line
    if args.action == "show":
        if len(args.targets) != 1:
            raise ValueError("keel tools show needs one NAME@VERSION, e.g. email@1")
        print(_contract(registry, args.targets[0]))
        return 0
    for tool in registry.names():
        print(_summary(registry.get(tool)))
    dirs = ", ".join(str(d) for d in tool_dirs())
    print(f"{len(registry.names())} tool(s) from {dirs}")
    return 0
