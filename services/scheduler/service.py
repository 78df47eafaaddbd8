"""Scheduler shell: consumes requests, facts and control; runs the pure core; produces facts and commands."""

from __future__ import annotations

from collections.abc import Sequence

from confluent_kafka import TopicPartition

import keel.events as ev
from keel.contracts import RunEvent, StepCommand
from keel.serde import Serde
from keel.settings import Settings
from keel.statestore import ChangelogState
from keel.topics import CONTROL, RUN_EVENTS, RUN_REQUESTS, SCHEDULER_STATE, STEP_COMMANDS
from keel.txloop import Output, Processor, Record, Reject
from keel.workflows import Catalog
from services.scheduler.core import Decision, Rejected, ToolModes, Workflows, decide, due, next_timer
from services.scheduler.state import RunState

TOPICS = [RUN_REQUESTS, RUN_EVENTS, CONTROL]


class SchedulerProcessor(Processor):
    def __init__(
        self, settings: Settings, workflows: Workflows | None = None, tool_mode: ToolModes | None = None
    ) -> None:
        self.workflows = workflows or Catalog.configured()
        self.tool_mode = tool_mode or _adapter_mode
        self.states: ChangelogState[RunState] = ChangelogState(
            settings, SCHEDULER_STATE, RunState.to_json, RunState.from_json, group="keel-scheduler-restore"
        )
        self.timers: dict[str, int] = {}  # run_id -> next due timer (ms); an index, rebuilt from states

    def on_assign(self, partitions: list[TopicPartition]) -> None:
        self.states.load({tp.partition for tp in partitions})
        self._index_timers()

    def on_revoke(self, partitions: list[TopicPartition]) -> None:
        self.states.drop({tp.partition for tp in partitions})
        self._index_timers()

    def on_abort(self) -> None:
        self.states.abort()
        # The index moved with the aborted changes; timers fired in that batch must stay due. (Messages
        # are re-read after the rewind; ticks are not, so nothing else would bring them back.)
        self._index_timers()

    def _index_timers(self) -> None:
        self.timers = {k: t for k, _, s in self.states.items() if (t := next_timer(s)) is not None}

    def on_commit(self) -> None:
        self.states.commit()

    def handle(self, record: Record) -> Sequence[Output]:
        run_id = record.value.run_id
        current = self.states.get(run_id)
        # The core mutates the state it is given: hand it a copy, so an aborted batch leaves no trace.
        state = RunState.from_json(current.to_json()) if current else None
        try:
            decision = decide(state, record.value, record.partition, ev.now_ms(), self.workflows)
        except Rejected as exc:
            raise Reject(exc.reason, exc.error_class) from None
        return self._apply(run_id, current, decision, record.partition)

    def tick(self, now_ms: int) -> Sequence[Output]:
        outputs: list[Output] = []
        for run_id, fire_at in list(self.timers.items()):
            current = self.states.get(run_id)
            if current is None or next_timer(current) is None:  # the timer's batch was aborted
                self.timers.pop(run_id, None)
                continue
            if fire_at > now_ms:
                continue
            decision = due(RunState.from_json(current.to_json()), now_ms, self.workflows, self.tool_mode)
            outputs += self._apply(run_id, current, decision, current.partition)
        return outputs

    def _apply(
        self, run_id: str, before: RunState | None, decision: Decision, partition: int
    ) -> list[Output]:
        outputs = [
            Output(RUN_EVENTS if isinstance(o, RunEvent) else STEP_COMMANDS, run_id, o)
            for o in decision.outputs
            if isinstance(o, RunEvent | StepCommand)
        ]
        after = decision.state
        if after is not None and (before is None or after.to_json() != before.to_json()):
            outputs.append(self.states.put(run_id, after, partition))
            timer = next_timer(after)
            if timer is None:
                self.timers.pop(run_id, None)
            else:
                self.timers[run_id] = timer
        return outputs


def _adapter_mode(tool: str) -> str | None:
    # Adapters are versioned code shipped with Keel; their declared mode is part of their contract.
    from services.adapters.catalog import UnknownTool, get_adapter

    try:
        return str(get_adapter(tool).idempotency_mode)
    except UnknownTool:
        return None  # unknown: treated as "none", the safe reading


def make_processor(settings: Settings, _: Serde) -> SchedulerProcessor:
    return SchedulerProcessor(settings)
