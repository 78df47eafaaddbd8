"""Kafka client configuration shared by every service: idempotent producers, read_committed consumers."""

from __future__ import annotations

from typing import Any

from confluent_kafka import Consumer, Producer

from keel.settings import Settings


def client_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """What every Kafka client Keel makes (producers, consumers, admin clients) starts from: where the
    broker is and who this process is to it (docs/tenancy.md section 2)."""
    conf: dict[str, Any] = {"bootstrap.servers": settings.kafka_bootstrap}
    if settings.kafka_security_protocol != "PLAINTEXT":
        conf["security.protocol"] = settings.kafka_security_protocol
        conf["sasl.mechanism"] = settings.kafka_sasl_mechanism
        conf["sasl.username"] = settings.kafka_username or ""
        conf["sasl.password"] = settings.kafka_password or ""
    conf.update(extra)
    return conf


def producer_config(settings: Settings, transactional_id: str | None = None, **extra: Any) -> dict[str, Any]:
    conf: dict[str, Any] = client_config(settings) | {
        "enable.idempotence": True,
        "acks": "all",
        # Latency over batching: a transactional batch is flushed by its commit anyway, and a lone
        # message (an API submit) should not wait for company.
        "linger.ms": 1,
        # librdkafka leaves Nagle's algorithm on: small transactional round trips (AddOffsets, EndTxn)
        # then wait for ACKs of earlier segments. Off, a paced 4-hop chain went from ~87 to ~16 ms p50.
        "socket.nagle.disable": True,
        # Java's default partitioner: every client (ours, Connect, Streams) puts a run_id on the same
        # partition, which co-partitioning of the run-keyed topics depends on.
        "partitioner": "murmur2_random",
        # The same limit the topics are created with (keel.topics): a record batch the producer accepts
        # is never refused by the broker, which would fail the transaction on every try.
        "message.max.bytes": settings.record_limit(),
    }
    if transactional_id:
        conf["transactional.id"] = transactional_id
        # A crashed instance that is not restarted under the same id holds readers back at the last
        # stable offset until its transaction times out: keep that window short.
        conf["transaction.timeout.ms"] = int(settings.transaction_timeout_s * 1000)
        # A transaction's outputs go out with its commit at the latest: lingering only delays the
        # AddPartitions/produce round trips that send_offsets then waits for (1.96 -> 1.29 ms p50 per
        # transaction with linger 1 -> 0, probed against the broker). Batches still form while a
        # request is in flight.
        conf["linger.ms"] = 0
    conf.update(extra)
    return conf


def consumer_config(
    settings: Settings, group_id: str, instance_id: str | None = None, **extra: Any
) -> dict[str, Any]:
    conf: dict[str, Any] = client_config(settings) | {
        "group.id": group_id,
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        # The broker's minimum; a crashed member is noticed within this time.
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 1000,
        # Range assigns partition N of every subscribed topic to the same member: one instance owns
        # all of a run's requests, events and commands.
        "partition.assignment.strategy": "range",
        "socket.nagle.disable": True,
        # When nothing is fetchable the broker holds a fetch this long; new data (or a commit marker)
        # answers it at once, so this only bounds how stale an idle consumer's view can be.
        "fetch.wait.max.ms": 100,
    }
    if settings.group_protocol == "consumer":
        # KIP-848: the broker assigns partitions and times sessions out (group.consumer.* settings on
        # the broker); the client-side knobs above are refused under this protocol. Its range assignor
        # keeps co-partitioning: partition N of every subscribed topic goes to the same member.
        for classic_only in ("session.timeout.ms", "heartbeat.interval.ms", "partition.assignment.strategy"):
            del conf[classic_only]
        conf["group.protocol"] = "consumer"
        conf["group.remote.assignor"] = "range"
    if instance_id:
        # Static membership: a restarted instance takes its partitions back without a rebalance.
        conf["group.instance.id"] = instance_id
    conf.update(extra)
    return conf


def make_producer(settings: Settings, **extra: Any) -> Producer:
    return Producer(producer_config(settings, **extra))


def make_consumer(settings: Settings, group_id: str, **extra: Any) -> Consumer:
    return Consumer(consumer_config(settings, group_id, **extra))
