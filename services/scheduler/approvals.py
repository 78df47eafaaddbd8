"""Decisions on approval cases (docs/quarantine.md): not handled by this release, so refused."""

from __future__ import annotations

from typing import Any

from keel.contracts import ControlCommand
from keel.workflows import WorkflowSpec
from services.scheduler.env import Env
from services.scheduler.state import RunState
from services.scheduler.verdicts import Decision, refused


def decide(
    state: RunState, cmd: ControlCommand, args: dict[str, Any], spec: WorkflowSpec, now_ms: int, env: Env
) -> Decision:
    why = "decisions on approval cases are not handled by this scheduler"
    return refused(state, cmd, why, now_ms, case_id=args.get("case_id"), decision=args.get("decision"))
