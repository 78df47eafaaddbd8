"""The step graph of a workflow: readiness, topological order, cycles and a Mermaid drawing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # model.py imports this module to validate graphs, so only type-check the other way.
    from keel.workflows.model import WorkflowSpec


def find_cycle(needs: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A cycle as [a, b, ..., a] (following `needs` edges), or None; deterministic in mapping order."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = fully explored
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in needs.get(node, ()):
            if state.get(dep) == 1:
                return path[path.index(dep) :] + [dep]
            if dep in needs and dep not in state and (cycle := visit(dep)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in needs:
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def ancestors(needs: Mapping[str, Sequence[str]], name: str) -> set[str]:
    """Every step `name` depends on, directly or transitively (assumes no cycle)."""
    seen: set[str] = set()
    stack = list(needs.get(name, ()))
    while stack:
        dep = stack.pop()
        if dep not in seen:
            seen.add(dep)
            stack.extend(needs.get(dep, ()))
    return seen


def ready_steps(spec: WorkflowSpec, committed: set[str], started: set[str]) -> list[str]:
    """Steps whose needs are all committed and that have not started yet, in file order."""
    return [
        s.name
        for s in spec.steps
        if s.name not in started and s.name not in committed and set(s.needs) <= committed
    ]


def topological_order(spec: WorkflowSpec) -> list[str]:
    """Steps in dependency order, level by level, file order within a level (stable for drawings)."""
    order: list[str] = []
    done: set[str] = set()
    while len(order) < len(spec.steps):
        level = ready_steps(spec, done, done)
        if not level:  # unreachable for a validated spec; guards hand-built ones
            raise ValueError(f"workflow {spec.name!r} has a cycle")
        order += level
        done.update(level)
    return order


def _label(text: str) -> str:
    return text.replace('"', "#quot;")


def _node(name: str) -> str:
    # `end` is a Mermaid keyword and would close the flowchart; every other valid step name is a safe id.
    return "end_" if name == "end" else name


def mermaid(spec: WorkflowSpec) -> str:
    """A `flowchart TD` of the workflow; side-effect steps get the `side_effect` class."""
    lines = ["flowchart TD"]
    for s in spec.steps:
        what = f"tool: {s.tool}" if s.kind == "tool" else f"llm: {s.model}"
        lines.append(f'    {_node(s.name)}["{_label(f"{s.name}<br/>{what}")}"]')
    for s in spec.steps:
        lines += [f"    {_node(dep)} --> {_node(s.name)}" for dep in s.needs]
    effects = [_node(s.name) for s in spec.steps if s.side_effects]
    if effects:
        lines.append("    classDef side_effect fill:#fde2e2,stroke:#c0392b,stroke-width:2px")
        lines.append(f"    class {','.join(effects)} side_effect")
    return "\n".join(lines) + "\n"
