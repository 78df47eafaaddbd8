"""The raw floor: transactional consume->produce hops with confluent-kafka, nothing else.

Each hop is its own process (as each Keel service is): read_committed consumer, transactional producer,
one transaction per batch with the consumed offsets, Nagle off. A driver stamps each message with its
send time and a read_committed sink at the end of the chain measures when it became visible.
"""

from __future__ import annotations

import multiprocessing as mp
import struct
import time
import uuid
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from bench import stats

# Low-latency client settings: Nagle off (librdkafka leaves it on), fetches answered as soon as a
# message is there, no linger. These are what the floor is: the best a hop can do on this machine.
FAST = {"socket.nagle.disable": True}
CONSUMER_FAST = {**FAST, "fetch.wait.max.ms": 5, "fetch.error.backoff.ms": 5}
PRODUCER_FAST = {**FAST, "linger.ms": 0}


def _hop(bootstrap: str, source: str, sink: str, group: str, ready: Any, stop: Any) -> None:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            **CONSUMER_FAST,
        }
    )
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": f"{group}-tx",
            "enable.idempotence": True,
            "acks": "all",
            **PRODUCER_FAST,
        }
    )
    producer.init_transactions(30)
    consumer.subscribe([source], on_assign=lambda c, p: ready.set())
    while not stop.is_set():
        first = consumer.poll(0.1)  # block for the first message, then drain what is already fetched
        if first is None or first.error():
            continue
        batch = [first, *consumer.consume(500, 0)]
        producer.begin_transaction()
        for msg in batch:
            if msg.error() is None:
                producer.produce(sink, msg.value(), msg.key())
        producer.send_offsets_to_transaction(
            consumer.position(consumer.assignment()), consumer.consumer_group_metadata(), 30
        )
        producer.commit_transaction(30)
    consumer.close()


class Chain:
    """`hops` hop processes over hops+1 fresh topics; `send` stamps messages, `sink` reads the end."""

    def __init__(self, bootstrap: str, hops: int, partitions: int = 3) -> None:
        self.bootstrap, self.hops = bootstrap, hops
        tag = uuid.uuid4().hex[:8]
        self.topics = [f"bench-floor-{tag}-{i}" for i in range(hops + 1)]
        self._admin = AdminClient({"bootstrap.servers": bootstrap})
        futures = self._admin.create_topics([NewTopic(t, partitions, 1) for t in self.topics])
        for f in futures.values():
            f.result(30)
        ctx = mp.get_context("spawn")
        self._stop = ctx.Event()
        self._procs = []
        readies = []
        for i in range(hops):
            ready = ctx.Event()
            group = f"bench-floor-{tag}-hop{i}"
            args = (bootstrap, self.topics[i], self.topics[i + 1], group, ready, self._stop)
            proc = ctx.Process(target=_hop, args=args, daemon=True)
            proc.start()
            self._procs.append(proc)
            readies.append(ready)
        for ready in readies:
            if not ready.wait(60):
                raise TimeoutError("a floor hop got no partitions within 60 s")
        self._producer = Producer(
            {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", **PRODUCER_FAST}
        )
        self._sink = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"bench-floor-{tag}-sink",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                **CONSUMER_FAST,
            }
        )
        last = self.topics[-1]
        parts = self._sink.list_topics(last, timeout=10).topics[last].partitions
        self._sink.assign([TopicPartition(last, p, 0) for p in parts])
        self._seq = 0

    def _send(self) -> None:
        self._seq += 1
        self._producer.produce(self.topics[0], struct.pack(">d", time.time()), str(self._seq).encode())
        self._producer.poll(0)

    def _drain(self, timeout: float) -> list[tuple[float, float]]:
        """(sent, visible) pairs: block up to `timeout` for one message, then take what is fetched.
        (consume(n, timeout) would wait the whole timeout and stamp messages late.)"""
        first = self._sink.poll(timeout)
        if first is None:
            return []
        out = []
        for msg in [first, *self._sink.consume(1000, 0)]:
            if msg.error() is None:
                out.append((struct.unpack(">d", msg.value() or b"")[0], time.time()))
        return out

    def _receive(self, expect: int, deadline: float) -> list[tuple[float, float]]:
        got: list[tuple[float, float]] = []
        while len(got) < expect and time.monotonic() < deadline:
            got += self._drain(0.1)
        return got

    def paced(self, rate: float, seconds: float) -> dict[str, Any]:
        count = max(1, int(rate * seconds))
        start = time.monotonic()
        got: list[tuple[float, float]] = []
        for i in range(count):
            while (wait := start + i / rate - time.monotonic()) > 0:
                got += self._drain(min(wait, 0.01))
            self._send()
        self._producer.flush(30)
        got += self._receive(count - len(got), time.monotonic() + 30)
        return self._figures(got, count)

    def flat_out(self, count: int) -> dict[str, Any]:
        for _ in range(count):
            while True:
                try:
                    self._send()
                    break
                except BufferError:
                    self._producer.poll(0.01)
        self._producer.flush(60)
        got = self._receive(count, time.monotonic() + 120)
        return self._figures(got, count)

    @staticmethod
    def _figures(got: list[tuple[float, float]], count: int) -> dict[str, Any]:
        rate = stats.sustained_rate([v for _, v in got])
        span = (max(v for _, v in got) - min(s for s, _ in got)) if got else 0.0
        return {
            "messages": count,
            "received": len(got),
            "latency_ms": stats.summary_ms([v - s for s, v in got]),
            # Whole burst: first send to last visible. The central-80% rate is beside it; with one
            # transaction per batch, messages become visible in bursts that can flatter it.
            "msgs_per_s_overall": round(len(got) / span, 1) if span > 0 else None,
            "msgs_per_s_sustained": round(rate, 1) if rate else None,
        }

    def close(self) -> None:
        self._stop.set()
        for proc in self._procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
        self._sink.close()
        self._admin.delete_topics(self.topics)


def measure(bootstrap: str, hops: int, rates: list[float], seconds: float, flat: int) -> dict[str, Any]:
    """Paced phases at each rate (messages/s) and one flat-out burst, through a chain of `hops`."""
    chain = Chain(bootstrap, hops)
    try:
        chain.paced(rates[0], min(2.0, seconds))  # warm-up: connections, fetch sessions, coordinators
        out: dict[str, Any] = {"hops": hops}
        for rate in rates:
            out[f"paced_{rate:g}_per_s"] = chain.paced(rate, seconds)
        out["flat_out"] = chain.flat_out(flat)
        return out
    finally:
        chain.close()
