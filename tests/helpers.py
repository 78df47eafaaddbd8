"""Test helpers: unique names, reading topics to a count or a deadline (never a bare sleep)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from confluent_kafka.admin import AdminClient

from keel.reader import read_topic  # noqa: F401 - re-exported for tests
from keel.settings import Settings
from keel.topics import TopicSpec, ensure_topics


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def make_topics(settings: Settings, *names: str, partitions: int = 1) -> None:
    ensure_topics(
        AdminClient({"bootstrap.servers": settings.kafka_bootstrap}),
        [TopicSpec(n, partitions) for n in names],
    )


def wait_for(check: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)
