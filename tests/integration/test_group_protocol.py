"""KIP-848's consumer protocol (KEEL_GROUP_PROTOCOL=consumer) against the real broker: the broker's range
assignor keeps co-partitioning as members join, and a transaction carrying the group's metadata
commits offsets under it."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from helpers import make_topics, unique, wait_for

from keel.producer import consumer_config, producer_config
from keel.settings import Settings

pytestmark = pytest.mark.integration


class Member:
    def __init__(self, settings: Settings, group: str, topics: list[str], name: str) -> None:
        self.consumer = Consumer(consumer_config(settings, group, name))
        self.owned: set[tuple[str, int]] = set()
        self.consumer.subscribe(
            topics,
            on_assign=lambda _, parts: self.owned.update((p.topic, p.partition) for p in parts),
            on_revoke=lambda _, parts: self.owned.difference_update((p.topic, p.partition) for p in parts),
        )

    def by_partition(self) -> dict[int, set[str]]:
        out: dict[int, set[str]] = {}
        for topic, p in self.owned:
            out.setdefault(p, set()).add(topic)
        return out


def _spin(members: list[Member], until: object, what: str) -> None:
    def turn() -> bool:
        for m in members:
            m.consumer.poll(0.05)
        return bool(until())  # type: ignore[operator]

    wait_for(turn, timeout=40, what=what)


def test_the_broker_assigns_partition_n_of_every_topic_to_one_member_and_transactions_commit(stack):
    settings = stack.model_copy(update={"group_protocol": "consumer"})
    topics = [unique("test.cop") for _ in range(3)]
    make_topics(settings, *topics, partitions=3)
    group = unique("group")
    first = Member(settings, group, topics, unique("m"))
    _spin([first], lambda: len(first.owned) == 9, "the first member to own all nine partitions")
    second = Member(settings, group, topics, unique("m"))
    members = [first, second]
    _spin(members, lambda: second.owned and len(first.owned | second.owned) == 9, "the second member's share")

    def settled() -> bool:  # every partition owned once, each member holding partition N of every topic
        split = [m.by_partition() for m in members]
        whole = len(first.owned | second.owned) == 9 and not set(split[0]) & set(split[1])
        return whole and all(ts == set(topics) for b in split for ts in b.values())

    _spin(members, settled, "an assignment that keeps partition N of every topic together")
    for m in members:
        assert all(ts == set(topics) for ts in m.by_partition().values()), m.by_partition()
    assert not set(first.by_partition()) & set(second.by_partition())

    producer = Producer(producer_config(settings, unique("txid")))
    producer.init_transactions(10)
    producer.begin_transaction()
    producer.produce(topics[0], b"x", partition=0)
    owned = [TopicPartition(t, p, 0) for t, p in sorted(first.owned)]
    producer.send_offsets_to_transaction(owned, first.consumer.consumer_group_metadata(), 10)
    producer.commit_transaction(10)
    committed = first.consumer.committed([TopicPartition(t, p) for t, p in sorted(first.owned)], timeout=10)
    assert all(tp.offset == 0 for tp in committed)
    for m in members:
        m.consumer.close()
