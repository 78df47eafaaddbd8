"""A definitions topic of a test's own (one partition, compacted, its contract registered)."""

from __future__ import annotations

from confluent_kafka.admin import AdminClient
from helpers import unique

from keel.serde import register_contracts, registry_client
from keel.settings import Settings
from keel.topics import TopicSpec, ensure_topics


def definitions_topic(settings: Settings) -> str:
    topic = unique("test.definitions")
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    ensure_topics(admin, [TopicSpec(topic, 1, {"cleanup.policy": "compact"})])
    register_contracts(registry_client(settings.schema_registry_url), {topic: "definition"})
    return topic
