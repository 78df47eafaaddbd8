"""The scheduler's state against the real broker: Kafka's partitioner, restore keeping a run on its own
partition, and retention keeping restore time and memory flat as ended runs pile up."""

from __future__ import annotations

import os
import time
import tracemalloc

import pytest
from confluent_kafka import Producer, TopicPartition
from helpers import make_topics, read_topic, unique, wait_for
from scheduler_kit import catalog, fact, one_step, request, run_id_on
from scheduler_topics import FAST_COMPACTION, running, scheduler_topics

from keel import events as ev
from keel.partitioner import partition_for
from keel.settings import Settings
from keel.txloop import Output, Record
from services.scheduler.config import SchedulerSettings, SchedulerTopics
from services.scheduler.service import SchedulerProcessor
from services.scheduler.state import RunState

pytestmark = pytest.mark.integration


def test_the_partitioner_puts_every_key_where_librdkafkas_murmur2_random_does(stack):
    topic = unique("test.partitioner")
    make_topics(stack, topic, partitions=7)
    producer = Producer({"bootstrap.servers": stack.kafka_bootstrap, "partitioner": "murmur2_random"})
    placed: dict[str, int] = {}
    keys = [unique("run") for _ in range(200)] + ["21", "foobar", "abc", "a", "ab", "é-ü-run"]
    for key in keys:
        producer.produce(
            topic,
            key=key,
            value=b"x",
            on_delivery=lambda err, msg: placed.__setitem__(msg.key().decode(), msg.partition()),
        )
    assert producer.flush(10) == 0
    assert placed == {k: partition_for(k, 7) for k in keys}


def processor(
    settings: Settings, topics: SchedulerTopics, horizon_s: float = 7 * 86400.0
) -> SchedulerProcessor:
    return SchedulerProcessor(
        settings,
        catalog(one_step()),
        {}.get,
        topics=topics,
        config=SchedulerSettings(retention_horizon_s=horizon_s, budgets=False),  # no enforcer here
        group=unique("test-scheduler"),
    )


def assign(proc: SchedulerProcessor, topics: SchedulerTopics, partitions: list[int]) -> float:
    """on_assign as the loop calls it; returns the seconds it took."""
    t0 = time.monotonic()
    proc.on_assign([TopicPartition(t, p) for t in topics.inputs() for p in partitions])
    return time.monotonic() - t0


def write_changelog(settings: Settings, topic: str, outputs: list[Output]) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 20})
    for i, out in enumerate(outputs):
        producer.produce(topic, key=out.key, value=out.value, partition=out.partition)
        if i % 10_000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0


# -- a stale copy on another partition never revives an ended run --------------------------------------


def test_a_copy_of_a_run_on_another_partitions_changelog_never_revives_it(stack):
    topics = scheduler_topics(stack)
    n = stack.topic_partitions
    run_id = run_id_on(0, n)
    maker = processor(stack, topics)
    # What the scheduler wrote before a run was owned by its partition: the run started from a request
    # that landed on partition 1 (a copy left running there), then ended on its own partition 0.
    started = maker.handle(Record(topics.requests, 0, 0, run_id, request(run_id), 0))
    stale = RunState.from_json(next(o.value for o in started if o.topic == topics.state))
    stale.partition = 1
    maker.on_commit()
    ended = maker.handle(Record(topics.events, 0, 0, run_id, fact(run_id, ev.STEP_COMMITTED), 0))
    final = next(o for o in ended if o.topic == topics.state)
    write_changelog(stack, topics.state, [Output(topics.state, run_id, stale.to_json(), partition=1), final])

    restored = processor(stack, topics)
    assign(restored, topics, [0])  # the owner's partition first, the stale copy's later: the worst order
    assign(restored, topics, [1])
    state = restored.states.get(run_id)
    assert state is not None and state.status == "completed" and run_id not in restored.timers
    # ... and the stale copy goes from the changelog with the next batch.
    owed = [o for o in restored.tick(ev.now_ms()) if o.topic == topics.state]
    assert owed == [Output(topics.state, run_id, None, partition=1)]

    # With that tombstone on partition 1, a restore of both partitions at once keeps the owner's copy.
    write_changelog(stack, topics.state, owed)
    again = processor(stack, topics)
    assign(again, topics, [0, 1])
    state = again.states.get(run_id)
    assert state is not None and state.status == "completed" and run_id not in again.timers
    assert [o for o in again.tick(ev.now_ms()) if o.topic == topics.state] == []


# -- retention: restore time and memory stay flat as ended runs pass the horizon ---------------------------

RUNS = int(os.environ.get("KEEL_RETENTION_FIGURE_RUNS", "50000"))


def ended_runs(settings: Settings, topics: SchedulerTopics, count: int) -> list[Output]:
    """The changelog writes of `count` runs that started and completed, made by the scheduler's shell."""
    proc = processor(settings, topics)
    writes: list[Output] = []
    for i in range(count):
        run_id = f"ended-{i}"
        p = partition_for(run_id, settings.topic_partitions)
        outs = list(proc.handle(Record(topics.requests, p, i, run_id, request(run_id), 0)))
        outs += proc.handle(Record(topics.events, p, i, run_id, fact(run_id, ev.STEP_COMMITTED), 0))
        proc.on_commit()
        writes += [o for o in outs if o.topic == topics.state]
    return writes


def restore_figures(settings: Settings, topics: SchedulerTopics) -> tuple[float, int, int]:
    """(seconds, entries in memory, bytes they hold) of a fresh scheduler restoring every partition."""
    everything = list(range(settings.topic_partitions))
    timed = processor(settings, topics)
    seconds = assign(timed, topics, everything)
    weighed = processor(settings, topics)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        assign(weighed, topics, everything)
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    return seconds, len(list(weighed.states.items())), held


def changelog_records(settings: Settings, topic: str) -> int:
    return len(read_topic(settings, topic, isolation="read_uncommitted", timeout=60))


@pytest.mark.slow  # about 100 s: a scale proof, in the slow tier (make test-slow, run by CI)
def test_restore_time_and_memory_stay_flat_as_ended_runs_pass_the_horizon(stack):
    empty = scheduler_topics(stack, FAST_COMPACTION)
    topics = scheduler_topics(stack, FAST_COMPACTION)
    writes = ended_runs(stack, topics, RUNS)
    assert len(writes) == 2 * RUNS  # each run: its state when it started, its marker when it ended
    write_changelog(stack, topics.state, writes)

    figures = {"no runs": restore_figures(stack, empty)}
    figures[f"{RUNS} ended runs, within the horizon"] = restore_figures(stack, topics)

    # A scheduler with a 1 s horizon: the ended runs pass it and their markers are tombstoned.
    expiring = processor(stack, topics, horizon_s=1.0)
    with running(stack, topics, expiring):
        wait_for(lambda: _entries(expiring) == 0 and len(expiring.states.loaded) > 0, 120, "markers to go")
    # The broker compacts them away (forced along by a write after each segment's time is up).
    roller = Producer({"bootstrap.servers": stack.kafka_bootstrap})

    def compacted() -> bool:
        for p in range(stack.topic_partitions):
            roller.produce(topics.state, key=b"segment-roll", value=None, partition=p)
        roller.flush(10)
        return changelog_records(stack, topics.state) <= RUNS // 100

    wait_for(compacted, 240, "the broker to compact the tombstoned changelog")
    figures[f"{RUNS} ended runs, past a 1 s horizon"] = restore_figures(stack, topics)

    print("\nscheduler restore, every partition, against the real broker:")
    print(f"  {'changelog':<44} {'restore s':>9} {'entries':>8} {'memory KiB':>11}")
    for name, (seconds, entries, held) in figures.items():
        print(f"  {name:<44} {seconds:>9.2f} {entries:>8} {held / 1024:>11.0f}")

    base_s, _, base_bytes = figures["no runs"]
    full_s, full_entries, full_bytes = figures[f"{RUNS} ended runs, within the horizon"]
    after_s, after_entries, after_bytes = figures[f"{RUNS} ended runs, past a 1 s horizon"]
    assert full_entries == RUNS and after_entries == 0
    assert after_bytes < base_bytes + 256 * 1024 < full_bytes
    assert after_s < base_s + 1.0, (
        f"restore took {after_s:.2f}s after the horizon, {base_s:.2f}s with no runs"
    )


def _entries(proc: SchedulerProcessor) -> int:
    while True:
        try:
            return sum(1 for _ in proc.states.items())
        except RuntimeError:  # the loop's thread changed the store meanwhile: count again
            continue


def test_an_ended_run_restored_in_full_shrinks_to_a_marker_that_the_horizon_can_expire(stack):
    topics = scheduler_topics(stack)
    run_id = run_id_on(2, stack.topic_partitions)
    maker = processor(stack, topics)
    maker.handle(Record(topics.requests, 2, 0, run_id, request(run_id), 0))
    maker.on_commit()
    full = maker.states.get(run_id)
    full.status, full.ended_at = "completed", None  # as written before ended runs were shrunk
    write_changelog(stack, topics.state, [Output(topics.state, run_id, full.to_json(), partition=2)])

    restored = processor(stack, topics, horizon_s=3600)
    assign(restored, topics, [2])
    marker = restored.states.get(run_id)
    assert marker.steps == {} and marker.input == {} and marker.ended_at is not None
    [write] = [o for o in restored.tick(ev.now_ms()) if o.topic == topics.state]
    assert write.key == run_id and write.partition == 2 and RunState.from_json(write.value) == marker
    restored.on_commit()
    assert [o for o in restored.tick(marker.ended_at + 3600 * 1000) if o.topic == topics.state] == [
        Output(topics.state, run_id, None, partition=2)
    ]
