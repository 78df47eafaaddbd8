"""`keel-worker MODULE`: serve the tools a Python module declares with @tool (keel.worker).

Each worker group of the module (a tool's `worker=`, by default its name) is consumed from its own
command topic, keel.tool-commands.GROUP, in the consumer group keel-worker-GROUP. One group and one
process: served in this process. Otherwise one child process per group and process number, restarted
when it dies.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from keel.service import serve
from keel.settings import get_settings
from keel.tooldefs import ToolRegistry, digest, parse_definition
from keel.topics import worker_commands
from keel.worker.sdk import Tool
from keel.worker.serve import ensure_group_topic, processor_factory

NOT_RESTARTABLE = 78  # another live process holds the instance id (keel.lease)


def tools_of(module_name: str) -> list[Tool[Any, Any]]:
    """Every Tool the module defines at top level, checked; a module with none is a mistake."""
    sys.path.insert(0, str(Path.cwd()))
    module = importlib.import_module(module_name)
    found = [v for v in vars(module).values() if isinstance(v, Tool)]
    if not found:
        raise SystemExit(f"keel-worker: {module_name} defines no @tool")
    for tool in found:
        tool.check()
    return sorted(found, key=lambda t: t.tool)


def drift(tools: list[Tool[Any, Any]], registry: ToolRegistry) -> list[str]:
    """Tools whose loaded definition (tools/, KEEL_TOOL_DIRS) says something else than the code: the
    scheduler and executor act on the definition (mode, worker group), so serving such a tool could
    route or retry it under a contract the code does not keep."""
    problems = []
    for tool in tools:
        if tool.tool in registry:
            ours = digest(parse_definition(tool.definition(), f"{tool.tool} (code)"))
            held = registry.loaded(tool.tool)
            if held.digest != ours:
                problems.append(
                    f"{tool.tool}: {held.source} differs from the code's definition; rewrite it with "
                    "--write-definitions (a changed contract needs a new version)"
                )
    return problems


def definitions_yaml(tools: list[Tool[Any, Any]]) -> str:
    docs = [yaml.safe_dump(t.definition(), sort_keys=False) for t in tools]
    return "---\n".join(docs)


def write_definitions(tools: list[Tool[Any, Any]], directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for tool in tools:
        path = directory / f"{tool.name}.v{tool.version}.yaml"
        path.write_text(yaml.safe_dump(tool.definition(), sort_keys=False))
        paths.append(path)
    return paths


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="keel-worker",
        description="Serve the tools a Python module declares with @tool (keel.worker), with Keel's "
        "exactly-once guarantees: tool_called committed before each call, the result in a second "
        "transaction, committed keys answered from the ledger, one attempt per key in flight, "
        "deadlines, circuit breakers, failure classes. See docs/workers.md.",
    )
    p.add_argument("module", help="the module defining the tools, e.g. myapp.tools (importable from here)")
    p.add_argument("--processes", type=int, default=1, help="processes per worker group (default 1)")
    p.add_argument(
        "--instance",
        default="0",
        help="instance id, stable across restarts (default 0); process i of N is ID-i. A second live "
        "process with the same id and group refuses to start",
    )
    p.add_argument("--group", help="serve only this worker group of the module")
    p.add_argument(
        "--print-definitions",
        action="store_true",
        help="print the tools' definitions (YAML, one document per tool) and exit",
    )
    p.add_argument(
        "--write-definitions",
        metavar="DIR",
        type=Path,
        help="write each tool's definition to DIR/NAME.vVERSION.yaml (e.g. tools/) and exit",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    tools = tools_of(args.module)
    if args.print_definitions:
        print(definitions_yaml(tools), end="")
        return 0
    if args.write_definitions is not None:
        for path in write_definitions(tools, args.write_definitions):
            print(path)
        return 0
    problems = drift(tools, ToolRegistry.configured())
    if problems:
        raise SystemExit("keel-worker: " + "\n".join(problems))
    groups = sorted({t.worker for t in tools})
    if args.group is not None:
        if args.group not in groups:
            raise SystemExit(f"keel-worker: {args.module} has no worker group {args.group!r}: {groups}")
        groups = [args.group]
    if len(groups) == 1 and args.processes == 1:
        group = groups[0]
        ensure_group_topic(get_settings(), group)
        served = [t for t in tools if t.worker == group]
        serve(f"worker-{group}", args.instance, [worker_commands(group)], processor_factory(group, served))
        return 0
    return _supervise(args.module, groups, args.processes, args.instance)


def _supervise(module: str, groups: list[str], processes: int, instance: str) -> int:
    """One child per group and process number; a child that dies is restarted (not one refused with
    78); SIGTERM/SIGINT are passed on and end the command once the children stopped."""
    argvs = [
        [sys.executable, "-m", "keel.worker", module, "--group", g, "--instance", f"{instance}-{i}"]
        for g in groups
        for i in range(processes)
    ]
    children = [subprocess.Popen(a) for a in argvs]
    stopping = False

    def forward(signum: int, _: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while not stopping:
        for i, child in enumerate(children):
            code = child.poll()
            if code is not None and code not in (0, NOT_RESTARTABLE) and not stopping:
                print(
                    f"keel-worker: {' '.join(argvs[i][3:])} exited with {code}; restarting", file=sys.stderr
                )
                children[i] = subprocess.Popen(argvs[i])
        if all(c.poll() is not None for c in children):
            break
        time.sleep(0.5)
    return max((c.wait() for c in children), default=0)


if __name__ == "__main__":
    raise SystemExit(main())
