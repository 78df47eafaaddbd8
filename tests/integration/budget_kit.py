"""The budget enforcer on topics of its own, against the real broker (for tests/integration).

Run as a script it is the enforcer as a real child process the tests can SIGKILL:
    python tests/integration/budget_kit.py COMMANDS EVENTS STATE DLQ GROUP TXID
(day limits from KEEL_BUDGET_LIMITS, as the service reads them).
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from confluent_kafka.admin import AdminClient

from keel.serde import Serde, register_contracts, registry_client
from keel.settings import Settings
from keel.topics import TopicSpec, ensure_topics
from keel.txloop import TransactionalLoop
from services.budget.config import BudgetSettings, BudgetTopics
from services.budget.service import BudgetProcessor


@dataclass(frozen=True)
class Setup:
    topics: BudgetTopics
    dlq: str
    group: str
    txid: str

    def argv(self) -> list[str]:
        t = self.topics
        return [t.commands, t.events, t.state, self.dlq, self.group, self.txid]


def budget_setup(settings: Settings) -> Setup:
    from helpers import unique

    topics = BudgetTopics(
        commands=unique("test.budget-commands"),
        events=unique("test.run-events"),
        state=unique("test.budget-state"),
    )
    setup = Setup(topics, unique("test.dead-letters"), unique("test-budget"), unique("test-budget-tx"))
    n = settings.topic_partitions
    specs = [
        TopicSpec(topics.commands, n),
        TopicSpec(topics.events, n),
        TopicSpec(topics.state, n, {"cleanup.policy": "compact"}),
        TopicSpec(setup.dlq, 1),
    ]
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    ensure_topics(admin, specs)
    register_contracts(registry_client(settings.schema_registry_url), envelopes(setup))
    return setup


def envelopes(setup: Setup) -> dict[str, str]:
    return {
        setup.topics.commands: "budget_command",
        setup.topics.events: "run_event",
        setup.dlq: "dead_letter",
    }


def serde(settings: Settings, setup: Setup) -> Serde:
    return Serde(registry_client(settings.schema_registry_url), envelopes(setup))


def make_loop(settings: Settings, setup: Setup, config: BudgetSettings | None = None) -> TransactionalLoop:
    processor = BudgetProcessor(settings, topics=setup.topics, config=config or BudgetSettings())
    return TransactionalLoop(
        settings,
        serde(settings, setup),
        processor,
        group_id=setup.group,
        topics=[setup.topics.commands],
        transactional_id=setup.txid,
        instance_id=setup.txid,
        dead_letter_topic=setup.dlq,
    )


@contextmanager
def running(settings: Settings, setup: Setup, config: BudgetSettings) -> Iterator[TransactionalLoop]:
    loop = make_loop(settings, setup, config)
    runner = threading.Thread(target=loop.run, daemon=True)
    runner.start()
    try:
        yield loop
    finally:
        loop.stop()
        runner.join(30)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    commands, events, state, dlq, group, txid = sys.argv[1:7]
    kit = Setup(BudgetTopics(commands=commands, events=events, state=state), dlq, group, txid)
    loop = make_loop(Settings(), kit)
    print("STARTED", flush=True)
    loop.run()
