"""The scheduler's shell without a broker: rollback of state and timers, ownership of a run by partition,
unprocessable runs held in quarantine, ended runs kept as markers and then forgotten, timers gated."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from scheduler_kit import catalog, fact, key_on, one_step, request, run_id_on

from keel import events as ev
from keel.contracts import RunEvent, RunRequested, StepCommand
from keel.partitioner import partition_for
from keel.settings import Settings
from keel.topics import RUN_EVENTS, RUN_REQUESTS, SCHEDULER_STATE
from keel.txloop import Output, Record, Reject
from keel.workflows import Catalog
from services.scheduler.config import SchedulerSettings
from services.scheduler.endprobe import EndProbe
from services.scheduler.ownership import REROUTED_FROM
from services.scheduler.service import SchedulerProcessor

PARTITIONS = Settings().topic_partitions
REQUEST = RunRequested(
    request_id="req",
    run_id="run-1",
    tenant_id="acme",
    workflow="outbound_email",
    input_json=json.dumps({"lead_email": "a@b.test", "lead_name": "A", "product": "K"}),
    requested_at=datetime.now(UTC),
)


def commands(outputs) -> list[StepCommand]:
    return [o.value for o in outputs if isinstance(o.value, StepCommand)]


def kinds(outputs) -> list[str]:
    return [o.value.event for o in outputs if isinstance(o.value, RunEvent)]


def on_owner(topic: str, value, offset: int = 0) -> Record:
    return Record(topic, partition_for(value.run_id, PARTITIONS), offset, value.run_id, value, 0)


class SilentProbe(EndProbe):
    """A broker that never answers: the gate moves only on what the processor reads."""

    def partition_counts(self, topics):
        return {}

    def end_offsets(self, wheres):
        return {}

    def resume_offsets(self, wheres):
        return {}

    def next_readable(self, starts, timeout_s=2.0):
        return {}


def processor(*specs, **kwargs) -> SchedulerProcessor:
    kwargs.setdefault("probe", SilentProbe(Settings(), "unit"))
    return SchedulerProcessor(Settings(), catalog(*(specs or (one_step(),))), {}.get, **kwargs)


def start(proc: SchedulerProcessor, run_id: str, **req) -> StepCommand:
    [command] = commands(proc.handle(on_owner(RUN_REQUESTS, request(run_id, **req))))
    proc.on_commit()
    return command


def deadline_of(command: StepCommand) -> int:
    return int(command.deadline.timestamp() * 1000)


def test_a_timer_fired_in_an_aborted_batch_fires_again():
    processor = SchedulerProcessor(
        Settings(), Catalog.load(), {"email@1": "provider_key"}.get, probe=SilentProbe(Settings(), "unit")
    )
    [first] = commands(processor.handle(on_owner(RUN_REQUESTS, REQUEST)))
    processor.on_commit()
    deadline = deadline_of(first)

    assert processor.tick(deadline - 1) == []
    fired = processor.tick(deadline)  # the attempt timed out: a retry is scheduled ...
    assert any(getattr(o.value, "event", None) == "retry_scheduled" for o in fired)
    processor.on_abort()  # ... but that batch's transaction was aborted

    again = processor.tick(deadline + 1)  # so the committed timer is still due, and fires again
    assert any(getattr(o.value, "event", None) == "retry_scheduled" for o in again)
    processor.on_commit()
    assert processor.tick(deadline + 2) == []  # and once committed, not a third time


# -- ownership: a run lives on its run_id's partition only ---------------------------------------------


def test_a_request_on_another_partition_is_rerouted_to_the_runs_partition_and_nothing_else():
    proc = processor()
    run_id = run_id_on(0, PARTITIONS)
    req = request(run_id)
    foreign = 1
    outputs = proc.handle(Record(RUN_REQUESTS, foreign, 7, key_on(foreign, PARTITIONS, run_id), req, 0))

    assert outputs == [
        Output(RUN_REQUESTS, run_id, req, [(REROUTED_FROM, f"{RUN_REQUESTS}:1:7".encode())], partition=0)
    ]
    assert proc.states.get(run_id) is None and proc.timers == {}  # no state, no events, no command


def test_a_run_is_started_and_its_state_written_on_its_own_partition():
    proc = processor()
    run_id = run_id_on(2, PARTITIONS)
    outputs = proc.handle(on_owner(RUN_REQUESTS, request(run_id)))
    [state_write] = [o for o in outputs if o.topic == SCHEDULER_STATE]
    assert state_write.partition == 2 and proc.states.get(run_id).partition == 2
    assert kinds(outputs) == ["created", "scheduled", "started"]


def test_a_fact_on_another_partition_than_its_runs_is_not_applied():
    proc = processor()
    run_id = run_id_on(0, PARTITIONS)
    start(proc, run_id)
    with pytest.raises(Reject) as rejected:
        proc.handle(Record(RUN_EVENTS, 1, 3, "x", fact(run_id, ev.STEP_COMMITTED), 0))
    assert rejected.value.error_class == "wrong_partition"
    assert proc.states.get(run_id).status == "running"


# -- one unprocessable run never takes the loop down ----------------------------------------------------


def test_a_due_timer_of_a_retired_workflow_version_quarantines_that_run_and_the_others_go_on():
    proc = processor(one_step(), one_step("retired"))
    doomed, healthy = run_id_on(0, PARTITIONS, "doomed"), run_id_on(0, PARTITIONS, "healthy")
    deadline = deadline_of(start(proc, doomed, workflow="retired"))
    start(proc, healthy)
    proc.workflows = catalog(one_step())  # the version the doomed run pins is retired while it runs

    outputs = proc.tick(deadline + 5)  # both deadlines are past
    held = [o.value for o in outputs if isinstance(o.value, RunEvent) and o.value.run_id == doomed]
    assert [e.event for e in held] == ["quarantined"]
    assert "UnknownWorkflow" in held[0].quarantine.reason and "retired" in held[0].quarantine.reason
    assert held[0].quarantine.case_id == f"{doomed}:unprocessable"
    assert "retry_scheduled" in kinds(o for o in outputs if o.key == healthy)  # the other run goes on
    proc.on_commit()
    assert proc.states.get(doomed).status == "quarantined"
    assert [o for o in proc.tick(deadline + 10) if o.key == doomed] == []  # held once, not on every turn


def test_a_message_for_a_run_whose_workflow_is_gone_quarantines_it_once():
    proc = processor(one_step("retired"))
    run_id = run_id_on(1, PARTITIONS)
    start(proc, run_id, workflow="retired")
    proc.workflows = catalog(one_step())

    outputs = proc.handle(on_owner(RUN_EVENTS, fact(run_id, ev.STEP_STARTED, workflow="retired")))
    assert kinds(outputs) == ["quarantined"]
    proc.on_commit()
    again = proc.handle(on_owner(RUN_EVENTS, fact(run_id, ev.STEP_COMMITTED, workflow="retired"), 1))
    assert again == []  # already held: no second case


# -- retention of ended runs ------------------------------------------------------------------------------


def complete(proc: SchedulerProcessor, run_id: str) -> list:
    start(proc, run_id)
    outputs = proc.handle(on_owner(RUN_EVENTS, fact(run_id, ev.STEP_COMMITTED), 1))
    proc.on_commit()
    return outputs


def test_an_ended_run_shrinks_to_a_small_marker():
    proc = processor()
    run_id = run_id_on(0, PARTITIONS)
    outputs = complete(proc, run_id)
    assert kinds(outputs) == ["completed"]
    [write] = [o for o in outputs if o.topic == SCHEDULER_STATE]
    marker = proc.states.get(run_id)
    assert marker.status == "completed" and marker.steps == {} and marker.input == {}
    assert marker.ended_at is not None and marker.partition == 0
    assert len(write.value) < 250, write.value  # bytes in the changelog per ended run


def test_a_repeated_run_id_within_the_horizon_is_a_no_op():
    proc = processor()
    run_id = run_id_on(0, PARTITIONS)
    complete(proc, run_id)
    assert proc.handle(on_owner(RUN_REQUESTS, request(run_id))) == []


def test_a_run_request_older_than_the_horizon_is_refused():
    proc = processor(config=SchedulerSettings(retention_horizon_s=60))
    old = request(run_id_on(0, PARTITIONS), at=datetime.now(UTC) - timedelta(seconds=61))
    with pytest.raises(Reject) as rejected:
        proc.handle(on_owner(RUN_REQUESTS, old))
    assert rejected.value.error_class == "expired" and "retention horizon of 60s" in rejected.value.reason
    assert proc.states.get(old.run_id) is None


def test_a_marker_older_than_the_horizon_is_tombstoned():
    proc = processor(config=SchedulerSettings(retention_horizon_s=1))
    run_id = run_id_on(2, PARTITIONS)
    complete(proc, run_id)
    ended = proc.states.get(run_id).ended_at

    assert [o for o in proc.tick(ended + 999) if o.topic == SCHEDULER_STATE] == []
    [tombstone] = [o for o in proc.tick(ended + 1000) if o.topic == SCHEDULER_STATE]
    assert tombstone == Output(SCHEDULER_STATE, run_id, None, partition=2)
    proc.on_abort()  # an aborted batch keeps the marker, and the tombstone comes again
    assert proc.states.get(run_id) is not None
    assert [o.value for o in proc.tick(ended + 1001) if o.topic == SCHEDULER_STATE] == [None]
    proc.on_commit()
    assert proc.states.get(run_id) is None and proc.tick(ended + 2000) == []


# -- timers wait for the backlog ----------------------------------------------------------------------------


def test_timers_of_a_partition_wait_until_its_input_caught_up_with_the_end_seen_at_assignment():
    proc = processor()
    run_id = run_id_on(0, PARTITIONS)
    deadline = deadline_of(start(proc, run_id))
    proc.gate.assign({0})  # as on_assign does, without a broker: the ends seen at assignment
    proc.gate.set_end(RUN_REQUESTS, 0, 1)
    proc.gate.set_end(RUN_EVENTS, 0, 10)

    assert proc.tick(deadline + 1) == []  # overdue, but the backlog may hold its result
    proc.handle(Record(RUN_REQUESTS, 0, 0, run_id, request(run_id), 0))
    proc.handle(on_owner(RUN_EVENTS, fact(run_id, ev.STEP_STARTED), 8))
    assert proc.tick(deadline + 2) == []  # offset 9 not read yet
    outputs = proc.handle(on_owner(RUN_EVENTS, fact(run_id, ev.STEP_COMMITTED), 9))
    assert kinds(outputs) == ["completed"]  # the result in the backlog wins over the deadline
    proc.on_commit()
    assert not proc.gate.held(0)


def test_a_caught_up_partition_fires_its_overdue_timers():
    proc = processor()
    run_id = run_id_on(1, PARTITIONS)
    deadline = deadline_of(start(proc, run_id))
    proc.gate.assign({1})
    proc.gate.set_end(RUN_REQUESTS, 1, 0)
    proc.gate.set_end(RUN_EVENTS, 1, 4)
    proc.gate.reached(RUN_REQUESTS, 1)  # what the probe says when only transaction markers are left
    assert proc.tick(deadline + 1) == []
    proc.handle(on_owner(RUN_EVENTS, fact(run_id, ev.STEP_STARTED), 3))
    assert kinds(proc.tick(deadline + 2)) == ["retry_scheduled"]
