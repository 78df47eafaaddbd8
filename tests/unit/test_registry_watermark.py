"""The registry's start-up read of its topic's end asks again while the partition has no leader yet (a
broker that has just started, a topic created a moment ago), and gives up on anything else."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from services.registry.store import high_watermark


class Answers:
    """Stands in for the consumer's watermark call only: the errors a broker gives, then an answer."""

    def __init__(self, *answers: object) -> None:
        self.answers, self.asked = list(answers), 0

    def get_watermark_offsets(self, partition: TopicPartition, timeout: float) -> tuple[int, int]:
        self.asked += 1
        answer = self.answers.pop(0)
        if isinstance(answer, KafkaError):
            raise KafkaException(answer)
        return 0, int(answer)  # type: ignore[call-overload]


def test_a_partition_without_a_leader_yet_is_asked_again():
    not_yet = KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION), KafkaError(KafkaError.LEADER_NOT_AVAILABLE)
    consumer = Answers(*not_yet, 7)
    assert high_watermark(consumer, TopicPartition("keel.schemas", 0), 5.0) == 7 and consumer.asked == 3


def test_any_other_error_is_raised_at_once():
    consumer = Answers(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED), 7)
    with pytest.raises(KafkaException):
        high_watermark(consumer, TopicPartition("keel.schemas", 0), 5.0)
    assert consumer.asked == 1
