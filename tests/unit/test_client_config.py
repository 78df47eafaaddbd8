"""Kafka client settings per consumer group protocol (classic, or KIP-848's consumer protocol)."""

from __future__ import annotations

from confluent_kafka import Consumer

from keel.producer import consumer_config
from keel.settings import Settings


def test_classic_groups_assign_by_range_on_the_client_with_static_members():
    conf = consumer_config(Settings(), "keel-scheduler", "keel-scheduler-0")
    assert conf["partition.assignment.strategy"] == "range"
    assert conf["group.instance.id"] == "keel-scheduler-0"
    assert "group.protocol" not in conf


def test_the_consumer_protocol_lets_the_broker_assign_by_range_and_keeps_static_members():
    conf = consumer_config(Settings(group_protocol="consumer"), "keel-scheduler", "keel-scheduler-0")
    assert conf["group.protocol"] == "consumer"
    assert conf["group.remote.assignor"] == "range"  # co-partitioning: partition N of every topic together
    assert conf["group.instance.id"] == "keel-scheduler-0"
    for classic_only in ("session.timeout.ms", "heartbeat.interval.ms", "partition.assignment.strategy"):
        assert classic_only not in conf
    Consumer(conf).close()  # librdkafka accepts the combination (it refuses classic-only settings)


def test_transactional_producers_do_not_linger_and_a_lone_message_waits_1_ms_at_most():
    from keel.producer import producer_config

    assert producer_config(Settings(), "keel-ledger-0")["linger.ms"] == 0
    assert producer_config(Settings())["linger.ms"] == 1
