"""A schema registry outage never turns good messages into dead letters.

The test runs a registry process of its own (on the shared broker's `_keel.schemas` topic, read-only
here: the schemas are registered through the shared registry first), stops it, and starts a loop that
has never seen the schemas: every decode fails until the registry is back.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
from confluent_kafka import Producer
from echo import make_loop
from helpers import make_topics, read_topic, unique, wait_for
from test_txloop import committed_offset, produce_requests, run_ids_of, serde_for
from test_txloop import topics as topics  # the fixture

from keel.contracts import DeadLetter
from keel.serde import Serde, register_contracts, registry_client
from keel.settings import Settings
from keel.statestore import ChangelogState

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Registry:
    """A registry process of this test's own, which it may stop and start at will."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.registry", "--port", str(self.port)],
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
            stderr=subprocess.DEVNULL,
        )

        def ready() -> bool:
            try:
                return httpx.get(f"{self.url}/subjects", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, timeout=30, what=f"the test's registry on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(20)
            self.proc = None


@pytest.fixture
def registry() -> Iterator[Registry]:
    reg = Registry(_free_port())
    try:
        yield reg
    finally:
        reg.stop()


def _letter(topic: str) -> DeadLetter:
    return DeadLetter(
        dead_letter_id=f"{topic}:0:0",
        source_topic=topic,
        source_partition=0,
        source_offset=0,
        reason="warming the schema cache",
        error_class="test",
        failed_at=datetime.now(UTC),
    )


def test_good_messages_wait_for_the_registry_and_only_unknown_schema_ids_are_dead_lettered(
    stack: Settings, topics, registry: Registry
):
    in_t, out_t, dlq, group, txid = topics
    shared = serde_for(stack, in_t, out_t, dlq)  # registered through the shared registry
    registry.start()  # replays _keel.schemas: knows the test's subjects and ids
    own = stack.model_copy(update={"schema_registry_url": registry.url})
    loop = make_loop(own, in_t, out_t, dlq, group, txid)
    # A long-running process has looked up the dead-letter schema long ago; the inputs' schema is new.
    loop.serde.encode(dlq, _letter(in_t))
    registry.stop()
    run_ids = [unique("run") for _ in range(4)]
    produce_requests(stack, shared, in_t, run_ids)

    runner = threading.Thread(target=loop.run, daemon=True)
    runner.start()
    try:
        wait_for(
            lambda: loop.registry_waits >= 2 or read_topic(stack, dlq, timeout=1) or not runner.is_alive(),
            timeout=60,
            what="the loop to meet the registry outage",
        )
        assert runner.is_alive()
        assert read_topic(stack, dlq) == []  # nothing dead-lettered while the registry is away
        assert committed_offset(stack, group, in_t) < 0  # and nothing skipped

        registry.start()
        wait_for(lambda: committed_offset(stack, group, in_t) == 4, timeout=60, what="the backlog")
        # Bytes that can never decode still go to dead letters: a schema id the registry answers 404 for.
        unknown_id = b"\x00" + struct.pack(">I", 987_654_321) + b"\x02xx"
        producer = Producer({"bootstrap.servers": stack.kafka_bootstrap})
        producer.produce(in_t, key=b"unknown-schema", value=unknown_id)
        assert producer.flush(10) == 0
        wait_for(lambda: committed_offset(stack, group, in_t) == 5, timeout=60, what="the unknown id")
    finally:
        loop.stop()
        runner.join(30)

    assert run_ids_of(stack, shared, out_t, read_topic(stack, out_t)) == sorted(run_ids)
    [letter] = [shared.decode(dlq, m.value()) for m in read_topic(stack, dlq, expect=1)]
    assert (letter.source_offset, letter.error_class) == (4, "undecodable")
    assert letter.value == unknown_id
    assert loop.registry_waits >= 2


def test_a_restore_waits_for_the_registry_instead_of_failing(stack: Settings, registry: Registry):
    changelog = unique("test.changelog")
    make_topics(stack, changelog)
    envelopes = {changelog: "dead_letter"}  # any contract: the changelog of a stateful service
    register_contracts(registry_client(stack.schema_registry_url), envelopes)
    shared = Serde(registry_client(stack.schema_registry_url), envelopes)
    producer = Producer({"bootstrap.servers": stack.kafka_bootstrap})
    producer.produce(changelog, key="k", value=shared.encode(changelog, _letter("t")), partition=0)
    assert producer.flush(10) == 0
    registry.start()
    registry.stop()

    own = Serde(registry_client(registry.url), envelopes)
    state: ChangelogState[DeadLetter] = ChangelogState(
        stack, changelog, lambda x: own.encode(changelog, x), lambda b: own.decode(changelog, b), group="g"
    )
    outcome: list[object] = []
    loader = threading.Thread(target=lambda: outcome.append(_try(state.load, {0}, 60.0)), daemon=True)
    loader.start()
    loader.join(8.0)  # the registry client's own retries, then ours
    assert outcome == [], f"the restore gave up while the registry was away: {outcome}"
    registry.start()
    loader.join(60)
    assert outcome == [1]
    letter = state.get("k")
    assert letter is not None and letter.reason == "warming the schema cache"


def _try(fn, *args):
    try:
        return fn(*args)
    except Exception as exc:
        return exc
