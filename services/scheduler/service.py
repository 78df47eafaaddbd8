"""Scheduler shell: consumes requests, facts and control; runs the pure core; produces facts and commands.

Around the core it keeps four rules of the shell (each in its own module):
- ownership: a run is owned only on its run_id's partition; a message keyed otherwise is re-routed there;
- catch-up: a partition's timers wait until its input has been read to where it ended at assignment;
- unprocessable: a run whose timer or message raises is quarantined, the loop goes on;
- retention: an ended run shrinks to a marker, tombstoned once older than the retention horizon.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaException, TopicPartition

import keel.events as ev
from keel.blobs import BlobMissing, BlobStoreUnavailable, store_for
from keel.contracts import BudgetCommand, RunEvent, RunRequested, StepCommand
from keel.definitions.tools import ToolView
from keel.definitions.view import live_workflows
from keel.routing import RouteConfig
from keel.serde import Serde
from keel.settings import Settings
from keel.tooldefs import ToolRegistry
from keel.txloop import Output, Processor, Record, Reject
from services.scheduler import fair, payloads, retention, unprocessable
from services.scheduler.catchup import CatchUpGate
from services.scheduler.config import SchedulerSettings, SchedulerTopics
from services.scheduler.core import Decision, Rejected, ToolModes, Workflows, decide, due, next_timer
from services.scheduler.endprobe import EndProbe
from services.scheduler.ledger import Ledger
from services.scheduler.ownership import owner_partition, reroute
from services.scheduler.runstore import RunStore
from services.scheduler.state import TERMINAL, RunState

TOPICS = SchedulerTopics().inputs()
GROUP = "keel-scheduler"  # the group run_service gives this service
PROBE_EVERY_S = 0.3  # how often a partition still catching up asks the broker whether it has
log = logging.getLogger(__name__)


class SchedulerProcessor(Processor):
    def __init__(
        self,
        settings: Settings,
        workflows: Workflows | None = None,
        tool_mode: ToolModes | None = None,
        *,
        topics: SchedulerTopics | None = None,
        config: SchedulerSettings | None = None,
        group: str = GROUP,
        probe: EndProbe | None = None,
    ) -> None:
        self.topics = topics or SchedulerTopics()
        # The workflow files plus the registered definitions: a run request naming a version not seen
        # yet waits (bounded) for the topic to be read to its end before it is refused as unknown.
        self.workflows = workflows or live_workflows(settings, self.topics.definitions)
        # A tool's mode is part of its definition (tools/*.yaml, KEEL_TOOL_DIRS, or registered): the files
        # load here, so a bad one fails the start loudly; an unknown tool reads as None, i.e. `none`, the
        # safe reading. Registered tools are followed with the workflows' reader.
        tools = ToolView(ToolRegistry.configured(), getattr(self.workflows, "reader", None))
        self.tool_mode = tool_mode or tools.mode
        self.key_retention = tools.key_retention
        self.tools = tools.get  # agent steps: their tools' schemas and whether each writes
        self.config = config or SchedulerSettings()
        self.budget_policy = self.config.budget_policy()
        # Fair dispatch: tenants' attempts in flight and held, over the runs owned here (an index too).
        self.ledger = Ledger(self.config.fair_policy())
        # The executor's routes (the same settings): a reservation covers the dearest model a call may reach.
        self.routes = RouteConfig.from_env()
        self.partitions = settings.topic_partitions  # of every run-keyed topic (co-partitioning)
        self.states = RunStore(settings, self.topics.state, self.partitions)
        self.timers: dict[str, int] = {}  # run_id -> next due timer (ms); an index, rebuilt from states
        self.expiry = retention.Expiry(int(self.config.retention_horizon_s * 1000))
        self.gate = CatchUpGate([self.topics.requests, self.topics.events])
        self.probe = probe or EndProbe(settings, group)
        self._last_probe = 0.0
        self._owed: list[Output] = []  # changelog writes found at restore, produced with the next batch
        self.blobs, self.blob_threshold = store_for(settings), settings.blob_threshold_bytes

    # -- partitions ---------------------------------------------------------------------------------
    def on_assign(self, partitions: list[TopicPartition]) -> None:
        numbers = {tp.partition for tp in partitions}
        self._check_partition_counts()
        self._owed += self.states.load(numbers)
        self._owed += self._shrink_ended_runs()
        self.gate.assign(numbers)
        for (topic, p), end in self.probe.end_offsets(self._gated(numbers)).items():
            self.gate.set_end(topic, p, end)
        self._reindex()

    def on_revoke(self, partitions: list[TopicPartition]) -> None:
        numbers = {tp.partition for tp in partitions}
        self.states.drop(numbers)
        self._owed = [o for o in self._owed if o.partition not in numbers]  # the next owner's now
        self.gate.revoke(numbers)
        self._reindex()

    def on_abort(self) -> None:
        self.states.abort()
        # The indexes moved with the aborted changes; timers fired in that batch must stay due. (Messages
        # are re-read after the rewind; ticks are not, so nothing else would bring them back.)
        self._reindex()

    def on_commit(self) -> None:
        self.states.commit()
        self._owed = []

    def _reindex(self) -> None:
        self.timers = {k: t for k, _, s in self.states.items() if (t := next_timer(s)) is not None}
        self.expiry.rebuild((k, s) for k, _, s in self.states.items())
        if self.ledger.policy.on:
            self.ledger.rebuild((k, s) for k, _, s in self.states.items())

    def _check_partition_counts(self) -> None:
        """A run's partition is computed from the partition count: it must be the topics' real one, and
        the same for every run-keyed topic, or runs would be re-routed to where their facts never land."""
        try:
            topics = [*self.topics.inputs(), self.topics.commands, self.topics.state]
            counts = self.probe.partition_counts(topics)
        except KafkaException as exc:
            log.warning("partition counts not checked this time: %s", exc)
            return
        if set(counts.values()) - {self.partitions}:
            raise RuntimeError(
                f"the scheduler's topics must all have {self.partitions} partitions "
                f"(KEEL_TOPIC_PARTITIONS); they have {counts}: refusing to schedule runs on them"
            )

    def _gated(self, numbers: set[int]) -> list[tuple[str, int]]:
        return [(t, p) for p in sorted(numbers) for t in self.gate.topics]

    def _shrink_ended_runs(self) -> list[Output]:
        """Ended runs restored in full (written before markers existed) become markers now."""
        now = ev.now_ms()
        writes = [
            self.states.put(k, retention.marker(s, now))
            for k, _, s in list(self.states.items())
            if s.status in TERMINAL and not retention.is_marker(s)
        ]
        self.states.commit()  # in memory now; the writes go out with the next batch (see `_owed`)
        return writes

    # -- messages ------------------------------------------------------------------------------------
    def handle(self, record: Record) -> Sequence[Output]:
        self.gate.consumed(record.topic, record.partition, record.offset)
        value: Any = record.value
        run_id = value.run_id
        now = ev.now_ms()
        if isinstance(value, RunRequested):
            reason = retention.expired_request(value, now, self.expiry.horizon_ms)
            if reason:
                raise Reject(reason, "expired")
        owner = owner_partition(run_id, self.partitions)
        if record.partition != owner:
            if record.topic == self.topics.events:  # facts are never re-published: that would copy them
                raise Reject(
                    f"a fact of run {run_id} on partition {record.partition}; the run's partition is {owner}",
                    "wrong_partition",
                )
            log.info(
                "re-routing %s of run %s from partition %d to %d",
                record.topic,
                run_id,
                record.partition,
                owner,
            )
            return [reroute(record, run_id, self.partitions)]
        current = self.states.get(run_id)
        # The core mutates the state it is given: hand it a copy, so an aborted batch leaves no trace.
        state = _copy(current) if current else None
        renders = payloads.renders(value)
        try:
            if renders:  # the core reads payloads, never refs: they are resolved here (see payloads)
                value = self._resolve(value)
                if state is not None:
                    payloads.hydrate(self.blobs, state)
            decision = decide(
                state,
                value,
                owner,
                now,
                self.workflows,
                key_retention=self.key_retention,
                tools=self.tools,
                budget_policy=self.budget_policy,
                routes=self.routes,
            )
            if renders and decision.state is not None:
                payloads.dehydrate(self.blobs, decision.state, self.blob_threshold)
        except Rejected as exc:
            raise Reject(exc.reason, exc.error_class) from None
        except BlobStoreUnavailable:
            raise  # not the run's fault: the loop retries the batch after a pause
        except Exception as exc:
            if current is None:
                raise  # no run to hold: the loop dead-letters the message with the reason
            log.exception(
                "run %s: cannot process %s:%d:%d", run_id, record.topic, record.partition, record.offset
            )
            decision = unprocessable.hold(_copy(current), f"{record.topic} message", exc, now)
        return self._apply(run_id, current, decision, now)

    def _resolve(self, value: Any) -> Any:
        try:
            return payloads.resolve_message(self.blobs, value)
        except BlobMissing as exc:
            if isinstance(value, RunRequested):  # no run yet: the request is dead-lettered, with why
                raise Reject(f"the run input cannot be read: {exc}", "blob_missing") from None
            raise  # a run's fact: the run is held with the reason (see `handle`)

    # -- timers --------------------------------------------------------------------------------------
    def tick(self, now_ms: int) -> Sequence[Output]:
        outputs: list[Output] = list(self._owed)
        try:
            self._check_caught_up()
        except KafkaException as exc:  # the timers stay held; asked again on a later turn
            log.warning("cannot tell yet whether the input caught up: %s", exc)
        for run_id, fire_at in list(self.timers.items()):
            if fire_at > now_ms:  # most timers, every turn: nothing else is looked at for them
                continue
            current = self.states.get(run_id)
            if current is None or next_timer(current) is None:  # the timer's batch was aborted
                self.timers.pop(run_id, None)
                continue
            if self.gate.held(owner_partition(run_id, self.partitions)):
                continue
            try:
                decision = due(
                    _copy(current),
                    now_ms,
                    self.workflows,
                    self.tool_mode,
                    tool_timeout_ms=self.config.tool_call_bound_ms(),
                    key_retention=self.key_retention,
                    tools=self.tools,
                    budget_policy=self.budget_policy,
                    routes=self.routes,
                )
            except Exception as exc:
                log.exception("run %s: its timer cannot be processed; quarantining the run", run_id)
                decision = unprocessable.hold(_copy(current), "a due timer", exc, now_ms)
            outputs += self._apply(run_id, current, decision, now_ms)
        outputs += self._expire(now_ms)
        if self.ledger.policy.on:  # slots freed otherwise (a restart with other limits, a rebalance)
            outputs += self._release(self.ledger.waiting_tenants(), now_ms)
        return outputs

    def _check_caught_up(self) -> None:
        """Ask the broker about the partitions still catching up (not on every turn: it costs a fetch)."""
        waiting = self.gate.waiting()
        if not waiting or time.monotonic() - self._last_probe < PROBE_EVERY_S:
            return
        self._last_probe = time.monotonic()
        unknown_end = [(t, p) for t, p, end, _ in waiting if end is None]
        for (topic, p), end in self.probe.end_offsets(unknown_end).items():
            self.gate.set_end(topic, p, end)
        waiting = [w for w in self.gate.waiting() if w[2] is not None]
        starts = {(t, p): nxt for t, p, _, nxt in waiting if nxt is not None}
        fresh = [(t, p) for t, p, _, nxt in waiting if nxt is None]  # nothing read since assignment
        starts.update(self.probe.resume_offsets(fresh) if fresh else {})
        ends = {(t, p): end for t, p, end, _ in waiting if end is not None}
        for where, readable in self.probe.next_readable(starts).items():
            if where in ends and readable >= ends[where]:
                self.gate.reached(*where)
                if not self.gate.held(where[1]):
                    log.info("partition %d caught up with its input: its timers fire from now on", where[1])

    def _expire(self, now_ms: int) -> list[Output]:
        outputs = []
        for run_id in self.expiry.due(now_ms, self.config.retention_batch):
            state = self.states.get(run_id)
            if state is not None and state.status in TERMINAL:
                outputs.append(self.states.delete(run_id))
        return outputs

    # -- decisions -----------------------------------------------------------------------------------
    def _apply(
        self, run_id: str, before: RunState | None, decision: Decision, now_ms: int, release: bool = True
    ) -> list[Output]:
        fair_on = self.ledger.policy.on
        if fair_on:  # attempts beyond the tenant's slots are held (docs/tenancy.md section 6)
            fresh = fair.starts(before, decision)
            if fresh:
                room = self.ledger.room(run_id, decision.state, fresh)
                decision = fair.hold(decision, room, now_ms, before)
        outputs = [
            Output(self.topics.events if isinstance(o, RunEvent) else self.topics.commands, run_id, o)
            for o in decision.outputs
            if isinstance(o, RunEvent | StepCommand)
        ]
        # Budget commands are keyed by tenant: one enforcer instance decides all of a tenant's budgets.
        outputs += [
            Output(self.topics.budget, o.tenant_id, o)
            for o in decision.outputs
            if isinstance(o, BudgetCommand)
        ]
        after = decision.state
        if after is not None and after.status in TERMINAL:
            if after.ended_at is None:
                after.ended_at = now_ms
            after = retention.marker(after, now_ms)
        if after is not None and (before is None or after != before):
            outputs.append(self.states.put(run_id, after))
            timer = next_timer(after)
            if timer is None:
                self.timers.pop(run_id, None)
            else:
                self.timers[run_id] = timer
            if after.status in TERMINAL:
                self.expiry.add(after)
        if fair_on and after is not None:
            self.ledger.update(run_id, after)
            if release:  # a slot it freed goes to the tenant's next held attempt, in this transaction
                outputs += self._release([after.tenant_id], now_ms)
        return outputs

    def _release(self, tenants: list[str], now_ms: int) -> list[Output]:
        """Send held attempts of `tenants` while they have free slots, in weighted round-robin."""
        outputs: list[Output] = []
        for tenant in self.ledger.rounds(tenants):
            found = self.ledger.next_held(tenant)
            current = self.states.get(found[0]) if found is not None else None
            if found is None or current is None:
                continue
            run_id, held = found
            try:
                spec = self.workflows.get(current.workflow, current.workflow_version)
                decision = fair.release(_copy(current), spec, held, now_ms, self.budget_policy)
            except Exception as exc:
                log.exception("run %s: its held attempt cannot be released; quarantining the run", run_id)
                decision = unprocessable.hold(_copy(current), "a held attempt", exc, now_ms)
            outputs += self._apply(run_id, current, decision, now_ms, release=False)
        return outputs


def _copy(state: RunState) -> RunState:
    return state.copy()


def make_processor(settings: Settings, _: Serde) -> SchedulerProcessor:
    return SchedulerProcessor(settings)
