"""Outputs the broker always rejects: the loop must not abort the same batch forever.

A message just under a topic's limit becomes a dead letter just over it; an output bigger than its
topic's limit is rejected on every try. Both used to abort and repeat the batch endlessly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections.abc import Iterator

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from echo import envelopes, make_loop
from helpers import read_topic, unique, wait_for
from test_txloop import committed_offset, request, run_ids_of, serde_for

from keel import dlq
from keel.producer import producer_config
from keel.serde import register_contracts, registry_client
from keel.settings import Settings
from keel.topics import TopicSpec, ensure_topics

pytestmark = pytest.mark.integration
MAX_VALUE = 20_000
# What the loop's producer accepts and what the topics are created with (keel.topics.record_limit).
LIMIT = MAX_VALUE + 64 * 1024


@pytest.fixture
def small(stack: Settings) -> Settings:
    return stack.model_copy(update={"max_message_bytes": MAX_VALUE})


def _topics(settings: Settings, out_limit: int) -> tuple[str, str, str, str, str]:
    in_t, out_t, dlq_t = unique("test.in"), unique("test.out"), unique("test.dlq")
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    ensure_topics(
        admin,
        [
            TopicSpec(in_t, 1, {"max.message.bytes": str(LIMIT)}),
            TopicSpec(out_t, 1, {"max.message.bytes": str(out_limit)}),
            TopicSpec(dlq_t, 1, {"max.message.bytes": str(LIMIT)}),
        ],
    )
    register_contracts(registry_client(settings.schema_registry_url), envelopes(in_t, out_t, dlq_t))
    return in_t, out_t, dlq_t, unique("group"), unique("txid")


def _run_until(loop, check, what: str, timeout: float = 40.0) -> None:
    runner = threading.Thread(target=loop.run, daemon=True)
    runner.start()
    try:
        wait_for(check, timeout=timeout, what=what)
    finally:
        loop.stop()
        runner.join(30)


@pytest.fixture
def near_limit(small: Settings) -> Iterator[tuple[str, str, str, str, str]]:
    yield _topics(small, LIMIT)


def test_a_message_just_under_the_limit_is_dead_lettered_by_reference_and_redriven_whole(small, near_limit):
    in_t, out_t, dlq_t, group, txid = near_limit
    serde = serde_for(small, in_t, out_t, dlq_t)
    good = [unique("run"), unique("run")]
    pattern = b"\x07" + bytes(range(256)) * (LIMIT // 256)  # not Avro
    # Whole, its dead letter would be just over the limit: this one used to loop forever.
    poison = pattern[: LIMIT - 150]
    # Over what a dead letter may carry whole, yet small enough to redrive with its history headers.
    large = pattern[: MAX_VALUE * 2]
    producer = Producer(producer_config(small))
    delivered: list = []
    # One at a time: together they would make a record batch over the topic's limit.
    for key, value in [
        (good[0], serde.encode(in_t, request(good[0]))),
        (b"poison", poison),
        (b"large", large),
        (good[1], serde.encode(in_t, request(good[1]))),
    ]:
        producer.produce(in_t, key=key, value=value, on_delivery=lambda err, _m: delivered.append(err))
        assert producer.flush(10) == 0
    assert delivered == [None] * 4

    loop = make_loop(small, in_t, out_t, dlq_t, group, txid)
    _run_until(loop, lambda: committed_offset(small, group, in_t) == 4, "the batch to commit")

    assert run_ids_of(small, serde, out_t, read_topic(small, out_t)) == sorted(good)
    letters = {x.source_offset: x for x in (serde.decode(dlq_t, m.value()) for m in read_topic(small, dlq_t))}
    assert sorted(letters) == [1, 2]
    for offset, original in ((1, poison), (2, large)):
        letter = letters[offset]
        assert (letter.source_topic, letter.source_partition, letter.error_class) == (in_t, 0, "undecodable")
        assert letter.value_truncated and letter.value_size == len(original)
        assert letter.value_digest == "sha256:" + hashlib.sha256(original).hexdigest()
        assert letter.value is not None and original.startswith(letter.value)
        assert len(letter.value) < MAX_VALUE

    # A redrive reads the whole original from where it still is, not the prefix kept in the letter.
    status = dlq.redrive(small, letters[2], "cli:tests")
    assert status["to"] == f"{in_t}:0:4"
    redriven = read_topic(small, in_t, expect=5)[4]
    assert redriven.value() == large and redriven.key() == b"large"


def test_an_output_its_topic_always_rejects_splits_the_batch_and_dead_letters_only_its_message(small):
    in_t, out_t, dlq_t, group, txid = _topics(small, out_limit=10_000)
    serde = serde_for(small, in_t, out_t, dlq_t)
    runs = [unique("run") for _ in range(5)]
    # Its echo is over the output topic's limit (and under everything else's).
    big = dataclasses.replace(request(runs[2], "echo-input"), input_json='{"text": "' + "x" * 15_000 + '"}')
    producer = Producer({"bootstrap.servers": small.kafka_bootstrap})
    for run_id in runs:
        producer.produce(
            in_t, key=run_id, value=serde.encode(in_t, big if run_id == runs[2] else request(run_id))
        )
    assert producer.flush(10) == 0
    original = read_topic(small, in_t, expect=5)[2].value()

    loop = make_loop(small, in_t, out_t, dlq_t, group, txid)
    _run_until(loop, lambda: committed_offset(small, group, in_t) == 5, "every message to be settled")

    assert run_ids_of(small, serde, out_t, read_topic(small, out_t)) == sorted(runs[:2] + runs[3:])
    [letter] = [serde.decode(dlq_t, m.value()) for m in read_topic(small, dlq_t, expect=1)]
    assert letter.source_offset == 2 and letter.error_class == "output_rejected"
    assert "too large" in letter.reason.lower() or "size" in letter.reason.lower()
    assert letter.value_truncated and letter.value_size == len(original)
    assert letter.value_digest == "sha256:" + hashlib.sha256(original).hexdigest()
    assert loop.split_batches >= 1  # it got there by halving the batch, not by luck
