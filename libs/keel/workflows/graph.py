"""The step graph of a workflow: readiness, topological order, cycles, fallbacks and a Mermaid drawing."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence, Set
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # model.py imports this module to validate graphs, so only type-check the other way.
    from keel.workflows.model import WorkflowSpec


def find_cycle(needs: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A cycle as [a, b, ..., a] (following `needs` edges), or None; deterministic in mapping order.

    Depth-first with an explicit stack rather than recursion: a chain of thousands of steps must not
    hit Python's recursion limit."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = fully explored
    for root in needs:
        if root in state:
            continue
        state[root] = 1
        path = [root]
        pending = [iter(needs.get(root, ()))]  # per node on the path: the deps still to look at
        while pending:
            dep = next(pending[-1], None)
            if dep is None:  # every dependency of the node on top is explored
                pending.pop()
                state[path.pop()] = 2
            elif state.get(dep) == 1:
                return path[path.index(dep) :] + [dep]
            elif dep in needs and dep not in state:
                state[dep] = 1
                path.append(dep)
                pending.append(iter(needs.get(dep, ())))
    return None


def ancestry(needs: Mapping[str, Sequence[str]]) -> Callable[[str, str], bool]:
    """`depends(step, other)`: whether `step` needs `other`, directly or transitively (assumes no cycle).

    Every step's ancestors are built once as a bitmask from its needs' masks, in dependency order, so a
    chain of thousands of steps costs milliseconds rather than a walk per step and reference."""
    names = list(needs)
    bit = {n: 1 << i for i, n in enumerate(names)}
    waiting = {n: len({d for d in needs[n] if d in bit}) for n in names}
    needed_by: dict[str, list[str]] = {n: [] for n in names}
    for n in names:
        for dep in {d for d in needs[n] if d in bit}:
            needed_by[dep].append(n)
    mask = dict.fromkeys(names, 0)
    frontier = [n for n in names if waiting[n] == 0]
    while frontier:
        node = frontier.pop()
        for child in needed_by[node]:
            mask[child] |= mask[node] | bit[node]
            waiting[child] -= 1
            if waiting[child] == 0:
                frontier.append(child)
    return lambda step, other: other in bit and bool(mask.get(step, 0) & bit[other])


def ready_steps(
    spec: WorkflowSpec, committed: set[str], started: set[str], chosen: Set[str] = frozenset()
) -> list[str]:
    """Steps whose needs are all committed and that have not started yet, in file order. A
    `fallback_only` step is ready only once `chosen` (as the fallback of a step that fell back);
    `committed` counts a step that fell back as committed once its fallback has."""
    return [
        s.name
        for s in spec.steps
        if s.name not in started
        and s.name not in committed
        and set(s.needs) <= committed
        and (not s.fallback_only or s.name in chosen)
    ]


def fallback_problems(spec: WorkflowSpec, depends: Callable[[str, str], bool]) -> list[str]:
    """A fallback stands in for the step it replaces: it must exist, be `fallback_only` (else it would run
    anyway), and need only steps committed before the step it replaces could start (so its inputs exist
    when it is chosen). A fallback-only step runs only when chosen, so no step may need it: the steps
    after it read its output as the output of the step it stands in for."""
    by_name = {s.name: s for s in spec.steps}
    chosen_by: dict[str, list[str]] = {}
    problems: list[str] = []
    for s in spec.steps:
        for where, name in s.fallbacks.items():
            target = by_name.get(name)
            if target is None:
                problems.append(f"step {s.name!r} {where} falls back to unknown step {name!r}")
            elif name == s.name:
                problems.append(f"step {s.name!r} {where} falls back to itself")
            elif not target.fallback_only:
                problems.append(
                    f"step {s.name!r} {where} falls back to {name!r}, which is not `fallback_only: true` "
                    "(it would run anyway)"
                )
            else:
                chosen_by.setdefault(name, []).append(s.name)
                missing = [d for d in target.needs if d not in s.needs and not depends(s.name, d)]
                if missing:
                    problems.append(
                        f"step {s.name!r} {where} falls back to {name!r}, which needs {missing} that "
                        f"{s.name!r} does not depend on (its inputs might not exist)"
                    )
        problems += [
            f"step {s.name!r} needs fallback-only step {d!r}: read it through the step it stands in for"
            for d in s.needs
            if by_name[d].fallback_only
        ]
    problems += [
        f"fallback-only step {s.name!r} is no step's fallback (it could never run)"
        for s in spec.steps
        if s.fallback_only and s.name not in chosen_by
    ]
    return problems


def topological_order(spec: WorkflowSpec) -> list[str]:
    """Steps in dependency order, level by level, file order within a level (stable for drawings).

    A step's level is one more than its deepest need's; computed in one pass over the edges (Kahn), so a
    chain of thousands of steps costs linear time, not a scan of every step per level."""
    names = [s.name for s in spec.steps]
    waiting = {s.name: len(set(s.needs)) for s in spec.steps}
    needed_by: dict[str, list[str]] = {n: [] for n in names}
    for s in spec.steps:
        for dep in set(s.needs):
            needed_by.setdefault(dep, []).append(s.name)
    level = dict.fromkeys(names, 0)
    frontier = [n for n in names if waiting[n] == 0]
    placed = 0
    while frontier:
        node = frontier.pop()
        placed += 1
        for child in needed_by.get(node, ()):
            level[child] = max(level[child], level[node] + 1)
            waiting[child] -= 1
            if waiting[child] == 0:
                frontier.append(child)
    if placed < len(names):  # unreachable for a validated spec; guards hand-built ones
        raise ValueError(f"workflow {spec.name!r} has a cycle")
    position = {n: i for i, n in enumerate(names)}
    return sorted(names, key=lambda n: (level[n], position[n]))


def _label(text: str) -> str:
    return text.replace('"', "#quot;")


def _node(name: str) -> str:
    # `end` is a Mermaid keyword and would close the flowchart; every other valid step name is a safe id.
    return "end_" if name == "end" else name


def mermaid(spec: WorkflowSpec) -> str:
    """A `flowchart TD` of the workflow; side-effect steps get the `side_effect` class."""
    lines = ["flowchart TD"]
    for s in spec.steps:
        what = {
            "tool": f"tool: {s.tool}",
            "llm": f"llm: {s.model}",
            "agent": f"agent: {s.model}, tools {', '.join(s.tools)}",
            "approval": "approval",
        }[s.kind]
        if s.requires_approval:
            what += ", approval first"
        if s.fallback_only:
            what += ", fallback only"
        lines.append(f'    {_node(s.name)}["{_label(f"{s.name}<br/>{what}")}"]')
    for s in spec.steps:
        lines += [f"    {_node(dep)} --> {_node(s.name)}" for dep in s.needs]
        lines += [f"    {_node(s.name)} -. {where} .-> {_node(to)}" for where, to in s.fallbacks.items()]
    effects = [_node(s.name) for s in spec.steps if s.side_effects]
    if effects:
        lines.append("    classDef side_effect fill:#fde2e2,stroke:#c0392b,stroke-width:2px")
        lines.append(f"    class {','.join(effects)} side_effect")
    return "\n".join(lines) + "\n"
