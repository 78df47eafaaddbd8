"""Re-runs from a step (docs/rerun.md): the origin's steps reused without a call, and the origin's keys
kept for the steps whose rendered input has not changed.

A re-run's request carries what the API read from the origin: the committed outputs of the steps before
`from_step` and, for `from_step` and after, the origin's key and rendered-input ref of each step. The
reused steps are committed at the start, by the scheduler, with `commit.reused_from` naming the origin:
nothing is issued for them, so nothing can be called. A live step whose rendered input has the origin's
content ref keeps the origin's key: the key's run field names the origin, so an effect the origin
committed is answered by the ledger and never reaches the provider again.
"""

from __future__ import annotations

import dataclasses

from keel import events as ev
from keel import rerun
from keel.contracts import CommitDetail, RunRequested
from keel.workflows import WorkflowSpec
from services.scheduler.admission import Rejected
from services.scheduler.state import COMMITTED, RunState
from services.scheduler.verdicts import Emitted, event

REUSED = "reused"  # the extra of a reused step's step_committed event id


def is_rerun(req: RunRequested) -> bool:
    return any(v is not None for v in (req.rerun_of, req.from_step, req.reused_json, req.origin_keys_json))


def prepare(req: RunRequested, spec: WorkflowSpec, state: RunState) -> None:
    """Hold a re-run's request to its rules (raises Rejected before anything is issued) and keep its
    origin and keys in the run's state."""
    try:
        reused = rerun.parse_reused(req.reused_json)
        keys = rerun.parse_origin_keys(req.origin_keys_json)
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        raise Rejected(f"re-run request: {exc}", "invalid_request") from None
    problems = []
    if not req.rerun_of or not req.from_step:
        problems.append("a re-run needs rerun_of and from_step")
    elif req.rerun_of == req.run_id:
        problems.append("a run cannot re-run itself")
    else:
        try:
            live = rerun.at_or_after(spec, req.from_step)
        except ValueError as exc:
            raise Rejected(str(exc), "invalid_request") from None
        if set(reused) & live or set(reused) - {s.name for s in spec.steps}:
            problems.append(f"reused_json may name only steps before {req.from_step}: {sorted(reused)}")
        if set(keys) - live:
            problems.append(f"origin_keys_json may name only {req.from_step} and the steps after it")
        for step, held in keys.items():
            # A key of another tenant, workflow or step would let this run be answered with an effect
            # that is not its origin's: only the origin's own keys, for the same step, are kept.
            parts = held["key"].split("|")
            if len(parts) != 5 or (parts[0], parts[1], parts[3]) != (state.tenant_id, state.workflow, step):
                problems.append(f"origin key of step {step} is not a key of this tenant, workflow and step")
    if problems:
        raise Rejected("; ".join(problems), "invalid_request")
    state.rerun_of, state.origin_keys = req.rerun_of, keys
    for name, output in reused.items():
        state.steps[name].status, state.steps[name].output = COMMITTED, output


def reused_facts(state: RunState, now_ms: int) -> list[Emitted]:
    """One step_committed per reused step (source scheduler, `commit.reused_from`): the timeline says
    the output is the origin's and that nothing was called."""
    if state.rerun_of is None:
        return []
    out: list[Emitted] = []
    for name, step in state.steps.items():
        if step.status != COMMITTED:
            continue
        out_json, out_ref = ev.inline(step.output)
        detail = CommitDetail(committed_at=ev.at_ms(now_ms), reused_from=state.rerun_of)
        fact = event(state, ev.STEP_COMMITTED, now_ms, name, 0, REUSED, output_json=out_json, commit=detail)
        out.append(dataclasses.replace(fact, output_ref=out_ref))
    return out


def key_for(state: RunState, step: str, input_json: str, key: str | None) -> str | None:
    """The key a live step's attempts carry: the origin's when its rendered input is the origin's,
    else the one rendered for this run."""
    held = state.origin_keys.get(step)
    if key is None or held is None:
        return key
    return held["key"] if ev.content_ref_of_json(input_json) == held["input_ref"] else key
