"""Fair dispatch in the scheduler's shell, without a broker: a tenant past its limit waits in its queue,
another tenant's run goes at once, a freed slot releases the next held attempt in the same batch as the
fact that freed it, and a restart rebuilds counts and queues from the run states (docs/tenancy.md 6)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from scheduler_kit import catalog, fact, one_step, request
from test_scheduler_shell import SilentProbe, commands, kinds, on_owner

from keel import events as ev
from keel.contracts import ControlCommand, RunEvent
from keel.settings import Settings
from keel.topics import CONTROL, RUN_EVENTS, RUN_REQUESTS
from services.scheduler.config import SchedulerSettings
from services.scheduler.service import SchedulerProcessor
from services.scheduler.state import RunState


def processor(limit: int = 2, limits: str = "") -> SchedulerProcessor:
    config = SchedulerSettings(tenant_max_inflight=limit, tenant_limits=limits, budgets=False)
    return SchedulerProcessor(
        Settings(), catalog(one_step()), {}.get, config=config, probe=SilentProbe(Settings(), "unit")
    )


def submit(proc: SchedulerProcessor, run_id: str, tenant: str = "acme") -> list:
    outputs = proc.handle(on_owner(RUN_REQUESTS, replace(request(run_id), tenant_id=tenant)))
    proc.on_commit()
    return outputs


def commit(proc: SchedulerProcessor, run_id: str) -> list:
    outputs = proc.handle(on_owner(RUN_EVENTS, fact(run_id, ev.STEP_COMMITTED)))
    proc.on_commit()
    return outputs


def burst(proc: SchedulerProcessor, n: int) -> list[str]:
    ids = [f"acme-{i}" for i in range(n)]
    for run_id in ids:
        submit(proc, run_id)
    return ids


def test_past_its_limit_a_tenant_waits_and_another_tenant_goes_at_once():
    proc = processor(limit=2)
    sent = [
        run_id for run_id in burst(proc, 5) if proc.states.get(run_id).steps["draft"].status == "dispatched"
    ]
    assert sent == ["acme-0", "acme-1"]
    assert proc.ledger.inflight("acme") == 2 and proc.ledger.queued("acme") == 3
    held = submit(proc, "acme-5")
    assert commands(held) == [] and ev.STEP_QUEUED in kinds(held)
    [cmd] = commands(submit(proc, "globex-0", tenant="globex"))
    assert cmd.run_id == "globex-0"


def test_a_freed_slot_releases_the_oldest_held_attempt_in_the_same_batch():
    proc = processor(limit=2)
    burst(proc, 4)
    outputs = commit(proc, "acme-0")
    assert ev.COMPLETED in kinds(outputs) and ev.STEP_RELEASED in kinds(outputs)
    assert [c.run_id for c in commands(outputs)] == ["acme-2"]
    assert [c.run_id for c in commands(commit(proc, "acme-1"))] == ["acme-3"]
    assert commands(commit(proc, "acme-2")) == [] and proc.ledger.inflight("acme") == 1


def test_a_failed_attempt_and_a_paused_run_give_their_slots_back():
    proc = processor(limit=1)
    burst(proc, 3)
    failed = proc.handle(on_owner(RUN_EVENTS, fact("acme-0", ev.STEP_FAILED)))
    proc.on_commit()
    assert [c.run_id for c in commands(failed)] == ["acme-1"]  # acme-0 waits for its retry's timer
    pause = ControlCommand(
        command_id="p1",
        run_id="acme-1",
        tenant_id="acme",
        action="pause",
        issued_at=ev.at_ms(ev.now_ms()),
        issued_by="op",
    )
    paused = proc.handle(on_owner(CONTROL, pause))
    proc.on_commit()
    assert ev.PAUSED in kinds(paused) and [c.run_id for c in commands(paused)] == ["acme-2"]


def test_an_aborted_release_is_released_again_and_once():
    proc = processor(limit=1)
    burst(proc, 2)
    first = proc.handle(on_owner(RUN_EVENTS, fact("acme-0", ev.STEP_COMMITTED)))
    assert [c.run_id for c in commands(first)] == ["acme-1"]
    proc.on_abort()  # the transaction holding the commit and the release is lost: both are redone
    assert proc.ledger.queued("acme") == 1 and proc.ledger.inflight("acme") == 1
    again = commit(proc, "acme-0")
    same = [(c.command_id, c.attempt, c.input_json) for c in commands(again)]
    assert same == [(c.command_id, c.attempt, c.input_json) for c in commands(first)]
    assert commands(proc.tick(ev.now_ms())) == [] and proc.ledger.queued("acme") == 0


def restarted(proc: SchedulerProcessor, limit: int) -> SchedulerProcessor:
    """A new instance restored from the run states the first one wrote (what the changelog holds)."""
    fresh = processor(limit=limit)
    for run_id, _, state in proc.states.items():
        fresh.states.put(run_id, RunState.from_json(state.to_json()))
    fresh.states.commit()
    fresh._reindex()
    return fresh


def test_after_a_restart_counts_and_queues_are_rebuilt_and_each_held_attempt_goes_once():
    proc = processor(limit=2)
    burst(proc, 6)
    again = restarted(proc, limit=2)
    assert again.ledger.inflight("acme") == 2 and again.ledger.queued("acme") == 4
    assert commands(again.tick(ev.now_ms())) == []  # no free slot: nothing sent twice
    released = []
    for run_id in ["acme-0", "acme-1", "acme-2", "acme-3", "acme-4", "acme-5"]:
        released += [c.run_id for c in commands(commit(again, run_id))]
    assert released == ["acme-2", "acme-3", "acme-4", "acme-5"]


def test_a_restart_with_a_higher_limit_sends_what_now_fits_once():
    proc = processor(limit=1)
    burst(proc, 4)
    again = restarted(proc, limit=3)
    sent = commands(again.tick(ev.now_ms()))
    again.on_commit()
    assert [c.run_id for c in sent] == ["acme-1", "acme-2"]
    assert commands(again.tick(ev.now_ms())) == [] and again.ledger.queued("acme") == 1


def test_no_limit_sends_everything_and_holds_nothing():
    proc = processor(limit=0)
    outputs = []
    for i in range(5):
        outputs += submit(proc, f"acme-{i}")
    assert len(commands(outputs)) == 5 and ev.STEP_QUEUED not in kinds(outputs)
    assert not any(isinstance(o.value, RunEvent) and o.value.event == ev.STEP_RELEASED for o in outputs)


def test_a_malformed_limit_stops_the_scheduler_at_start_naming_the_variable(monkeypatch):
    monkeypatch.setenv("KEEL_TENANT_LIMITS", '{"acme": {"max_inflight": "many"}}')
    with pytest.raises(ValueError, match=r"KEEL_TENANT_LIMITS\['acme'\].max_inflight"):
        SchedulerProcessor(Settings(), catalog(one_step()), {}.get, probe=SilentProbe(Settings(), "unit"))


def control(run_id: str, action: str) -> ControlCommand:
    return ControlCommand(
        command_id=f"{action}-{run_id}",
        run_id=run_id,
        tenant_id="acme",
        action=action,
        issued_at=ev.at_ms(ev.now_ms()),
        issued_by="op",
    )


def test_a_held_attempt_of_a_canceled_run_is_never_sent_and_the_run_ends_canceled():
    proc = processor(limit=1)
    burst(proc, 3)
    canceled = proc.handle(on_owner(CONTROL, control("acme-1", "cancel")))
    proc.on_commit()
    assert ev.CANCELED in kinds(canceled) and commands(canceled) == []
    assert [c.run_id for c in commands(commit(proc, "acme-0"))] == ["acme-2"]  # acme-1 is skipped


def test_a_held_attempt_of_a_paused_run_waits_for_the_resume_then_for_a_slot():
    proc = processor(limit=1)
    burst(proc, 3)
    proc.handle(on_owner(CONTROL, control("acme-1", "pause")))
    proc.on_commit()
    assert [c.run_id for c in commands(commit(proc, "acme-0"))] == ["acme-2"]  # the paused run waits
    resumed = proc.handle(on_owner(CONTROL, control("acme-1", "resume")))
    proc.on_commit()
    assert ev.RESUMED in kinds(resumed) and commands(resumed) == []  # acme-2 holds the one slot
    assert [c.run_id for c in commands(commit(proc, "acme-2"))] == ["acme-1"]
