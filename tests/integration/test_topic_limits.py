"""Topics created before their limit was set are brought up to what the producers send."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType
from helpers import make_topics, unique

from keel.producer import producer_config
from keel.topics import TopicSpec, ensure_topics

pytestmark = pytest.mark.integration


def _limit(admin: AdminClient, topic: str) -> int:
    [future] = admin.describe_configs([ConfigResource(ResourceType.TOPIC, topic)]).values()
    return int(future.result(10)["max.message.bytes"].value)


def test_an_existing_topic_gets_the_limit_the_producers_send_up_to(stack):
    admin = AdminClient({"bootstrap.servers": stack.kafka_bootstrap})
    old, bigger = unique("test.old"), unique("test.bigger")
    make_topics(stack, old)  # the broker's default limit
    ensure_topics(admin, [TopicSpec(bigger, 1, {"max.message.bytes": "5000000"})])
    sent = producer_config(stack)["message.max.bytes"]
    assert _limit(admin, old) < sent  # what the bug looked like: the broker refuses what producers send

    limit = {"max.message.bytes": str(stack.record_limit())}
    ensure_topics(admin, [TopicSpec(old, 1, dict(limit)), TopicSpec(bigger, 1, dict(limit))])
    assert _limit(admin, old) == sent
    assert _limit(admin, bigger) == 5_000_000  # never lowered
