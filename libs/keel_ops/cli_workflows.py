"""`keel workflows apply|list|versions|graph`: register workflows at runtime and see what is registered."""

from __future__ import annotations

import getpass
from pathlib import Path

from keel.definitions.log import apply_text
from keel.definitions.problems import DefinitionInvalid
from keel.definitions.reader import DefinitionsReader
from keel.definitions.view import WorkflowView, spec_digest
from keel.settings import Settings
from keel.topics import DEFINITIONS
from keel.workflows import Catalog, mermaid
from keel_ops.stack import say

HELP = (
    "workflows: list (files and registered), versions NAME, graph NAME [--version N], "
    "apply FILE (validate and register a workflow version; a version never changes)"
)


def cli_actor() -> str:
    """Who acts through the operator tooling, as its records and the audit trail name them."""
    return f"cli:{getpass.getuser()}"


def apply_file(
    settings: Settings,
    path: str,
    applied_by: str | None = None,
    topic: str = DEFINITIONS,
    kind: str = "workflow",
) -> bool:
    """Apply one definition file (a workflow, or a tool: `kind`); prints what happened. False when it
    was refused (invalid or conflict)."""
    who = applied_by or cli_actor()
    try:
        applied = apply_text(
            settings,
            kind,
            Path(path).read_text(encoding="utf-8"),
            source=path,
            applied_by=who,
            topic=topic,
        )
    except DefinitionInvalid as exc:
        print(f"REFUSED {path}: invalid, nothing registered:\n{exc}")
        return False
    p = applied.parsed
    if not applied.accepted:
        assert applied.winner is not None
        print(
            f"REFUSED {path}: {p.name} v{p.version} is registered with other content "
            f"({applied.winner.digest}); a version never changes: give it a new version"
        )
        return False
    print(f"{applied.outcome:<9} {p.name} v{p.version} {p.digest}")
    return True


def apply_local_files(settings: Settings, topic: str = DEFINITIONS) -> int:
    """What `keel up` does: apply every workflow file (shipped and KEEL_WORKFLOW_DIRS); returns refusals."""
    Catalog.configured()  # the files must load (names, versions, no duplicates) before any is applied
    refused = 0
    for directory in catalog_dirs():
        for path in sorted(Path(directory).glob("*.yaml")):
            refused += not apply_file(settings, str(path), "keel up", topic)
    if refused:
        say(f"{refused} workflow file(s) REFUSED: the registered definitions are used; see above")
    return refused


def catalog_dirs() -> list[str]:
    import os

    from keel.workflows import WORKFLOW_DIR

    return [str(WORKFLOW_DIR), *(d for d in os.environ.get("KEEL_WORKFLOW_DIRS", "").split(os.pathsep) if d)]


def view(settings: Settings) -> WorkflowView:
    return WorkflowView(Catalog.configured(), DefinitionsReader(settings), wait_s=2)


def run(settings: Settings, action: str, target: str | None, version: int | None) -> int:
    if action == "apply":
        if not target:
            raise ValueError("keel workflows apply needs a FILE")
        return 0 if apply_file(settings, target) else 1
    workflows = view(settings)
    try:
        if action == "graph":
            if not target:
                raise ValueError("keel workflows graph needs a workflow NAME")
            print(mermaid(workflows.get(target, version)))
        elif action == "versions":
            if not target:
                raise ValueError("keel workflows versions needs a workflow NAME")
            workflows.get(target)  # unknown: says which are known
            for v in workflows.versions(target):
                record = workflows.record(target, v)
                where = f"registered by {record.applied_by}" if record else "file only"
                print(f"v{v:<4} {spec_digest(workflows.get(target, v))}  {where}")
        else:
            for name in workflows.names():
                spec = workflows.get(name)
                print(f"{name:<20} v{spec.version}  {len(spec.steps)} steps  {spec.description.strip()}")
        for conflict in workflows.conflicts:
            print(f"CONFLICT {conflict}")
    finally:
        workflows.close()
    return 0
