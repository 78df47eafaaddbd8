"""`keel record` and `keel replay`: a run's recording over the API, and one of its steps re-executed from
it in a sandbox, with no network (docs/replay.md)."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from keel import replay as sandbox
from keel.recording import Recording, record
from keel.settings import Settings
from keel.tooldefs import ToolRegistry, load_definition
from keel_ops import cli_runs, replay_core

RECORD_HELP = "write a run's recording (events, payloads, workflow and tools) as JSON"
REPLAY_HELP = "re-execute a step of a run from its recording, with no network, and diff the outcome"


def record_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_id", help="the run")
    p.add_argument("--out", help="write to this file (default: stdout)")


def replay_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="a run id (recorded over the API first) or a recording FILE")
    p.add_argument("--step", required=True, help="the step to replay")
    p.add_argument("--attempt", type=int, help="the attempt (default: the last)")
    p.add_argument("--call", help="an agent step's turn (turn-N) or tool call (turn-N.call-I)")
    p.add_argument(
        "--as-recorded", action="store_true", help="parse with the recorded tool definition, not today's"
    )
    p.add_argument("--tool-file", help="parse with this tool definition (YAML), e.g. a fix under review")


def recording_over_api(settings: Settings, run_id: str) -> dict[str, Any]:
    """The run's recording from the API: its events, each payload they name, its definitions."""
    events = [e["body"] for e in cli_runs.api(settings, "GET", f"/v1/runs/{run_id}/events")["events"]]
    defs = cli_runs.api(settings, "GET", f"/v1/runs/{run_id}/definitions")

    def blob(ref: str) -> Any:
        return cli_runs.api(settings, "GET", f"/v1/runs/{run_id}/blobs/{ref}")

    return record(events, blob, defs["workflow"], defs["tools"])


def cmd_record(settings: Settings, args: argparse.Namespace) -> int:
    text = json.dumps(recording_over_api(settings, args.run_id), indent=1, sort_keys=True)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    else:
        print(text)
    return 0


def replay(
    rec: Recording,
    step: str,
    attempt: int | None = None,
    call: str | None = None,
    as_recorded: bool = False,
    tool_file: str | None = None,
) -> tuple[sandbox.StepReplay, replay_core.CoreReplay]:
    """The step's attempt re-executed, and the scheduler core replayed over the whole recording. A tool
    step's answer is parsed by `tool_file`, else today's loaded definition (KEEL_TOOL_DIRS), else (or
    with `as_recorded`) the recorded one."""
    spec = rec.workflow.step(step) if rec.workflow is not None else None
    tool_call = call is not None and ".call-" in call
    if spec is not None and spec.kind == "agent" and call is None:
        raise ValueError(f"{step} is an agent step: name a turn or tool call with --call (turn-N[.call-I])")
    if (spec is not None and spec.kind == "tool") or tool_call:
        definition, source = None, "today's definition"
        if tool_file:
            definition, source = load_definition(tool_file), f"the definition in {tool_file}"
        elif not as_recorded:
            tool = _tool_of(rec, step, call)
            current = ToolRegistry.configured()
            definition = current.get(tool) if tool in current.names() else None
        result = sandbox.replay_tool(rec, step, definition, attempt, call, source)
    else:
        result = sandbox.replay_model(rec, step, attempt, call)
    return result, replay_core.replay_scheduler(rec)


def _tool_of(rec: Recording, step: str, call: str | None) -> str:
    for e in rec.events:
        if e.step == step and e.call == call and e.tool is not None:
            return e.tool.tool
    return ""


def cmd_replay(settings: Settings, args: argparse.Namespace) -> int:
    if os.path.exists(args.run):
        rec = Recording.load(args.run)
    else:
        rec = Recording(recording_over_api(settings, args.run))
    step, core = replay(rec, args.step, args.attempt, args.call, args.as_recorded, args.tool_file)
    print(format_replay(rec, step, core))
    return 0 if step.same and core.same else 2


def format_replay(rec: Recording, step: sandbox.StepReplay, core: replay_core.CoreReplay) -> str:
    where = step.step + (f" {step.call}" if step.call else "")
    lines = [f"replay of {rec.run_id} step {where} attempt {step.attempt} ({step.kind}), no network"]
    lines.append(f"  input:    {json.dumps(step.input)[:300]}")
    lines.append(f"  answer:   {json.dumps(step.answer)[:300]}")
    lines.append(f"  recorded: {_outcome(step.recorded)}")
    lines.append(
        f"  today:    {_outcome(step.now)}"
        + (f"  (parsed with {step.parsed_with})" if step.kind == "tool" else "")
    )
    lines += [f"  diff: {d}" for d in step.diff] or ["  diff: none (today's code gives the recorded outcome)"]
    lines.append("  attempts as recorded:")
    for a in sandbox.attempts_of(rec, step.step, step.call):
        why = a.get("retry_reason") or a.get("quarantine_reason") or a.get("ended") or ""
        fail = f" failure={a['failure_class']}" if a.get("failure_class") else ""
        lines.append(f"    #{a['attempt']}{fail}  {why}")
    lines.append(f"  scheduler core today: {'decides the same' if core.same else 'decides otherwise'}")
    lines += [f"    {d}" for d in core.diff]
    return "\n".join(lines)


def _outcome(o: sandbox.Outcome) -> str:
    return f"ok {json.dumps(o.output)[:300]}" if o.ok else f"failed: {o.error}"
