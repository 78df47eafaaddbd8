"""Control commands in the scheduler's pure core (keel.control, docs/quarantine.md): cancel, pause and
resume a run, and decide a case (a quarantined step, or a step waiting for approval).

Every command is judged against the run's own state, one message at a time: two decisions on one case
can never both apply, whatever order they arrive in; the second is refused with a `decision_refused` fact.
"""

from __future__ import annotations

from keel.contracts import ControlCommand
from keel.workflows import WorkflowSpec
from services.scheduler import cancel, decisions, pause
from services.scheduler.env import Env
from services.scheduler.state import TERMINAL, RunState
from services.scheduler.verdicts import Decision


def on_command(state: RunState, cmd: ControlCommand, spec: WorkflowSpec, now_ms: int, env: Env) -> Decision:
    """One control command on one run. On an ended run a decision is refused (a fact says why: its
    sender waits for an answer) and any other command changes nothing."""
    if cmd.action == "decide":
        return decisions.on_decide(state, cmd, spec, now_ms, env)
    if state.status in TERMINAL:
        return Decision(state, [])
    if cmd.action == "cancel":
        return cancel.on_cancel(state, cmd, spec, now_ms)
    if cmd.action == "pause":
        return pause.on_pause(state, cmd, spec, now_ms, env)
    if cmd.action == "resume":
        return pause.on_resume(state, cmd, spec, now_ms, env)
    return Decision(state, [])
