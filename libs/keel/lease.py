"""Instance leases: at most one live process per instance id.

Two processes started with the same `--instance` would fence each other's transactional producer
forever, and under the classic group protocol the newcomer silently takes the static member's place.
So a process first takes a lease of its own on the compacted `keel.instance-leases` topic (keyed by
its transactional id) and renews it every `instance_lease_interval_s`:

- no recent lease record, a released one, or one whose process is gone (same host, pid not running or
  reused): taken at once, so a killed instance restarts under its own id without waiting;
- otherwise the newcomer watches for one interval plus a margin: a renewal means a live duplicate, and
  it refuses to start, loudly; no renewal means the holder is dead (another host) and the lease is
  taken.

A holder that sees a newer claim for its id (it was paused past its lease and replaced) stops at once:
the newest claim, by offset, wins. Its transactional producer is fenced by the successor anyway.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass

from confluent_kafka import OFFSET_END, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from keel.producer import client_config
from keel.settings import Settings
from keel.topics import INSTANCE_LEASES, ensure_topics, lease_topic

log = logging.getLogger(__name__)
MARGIN_S = 1.0


class DuplicateInstance(RuntimeError):
    """Another live process holds this instance id."""


@dataclass(frozen=True)
class LeaseRecord:
    token: str  # one per process lifetime
    host: str
    pid: int
    started: str  # the process's start time (tells a reused pid apart)
    at_ms: int
    state: str  # "held" | "released"
    claim: int = -1  # offset of the holder's claim record; -1 on the claim itself

    def claim_offset(self, offset: int) -> int:
        return self.claim if self.claim >= 0 else offset


def _stat(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the command name (state first); empty where there is no /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _started(pid: int) -> str:
    fields = _stat(pid)
    return fields[19] if len(fields) > 19 else ""


def process_gone(record: LeaseRecord) -> bool:
    """True when the holder ran on this host and its process no longer exists (or its pid was reused)."""
    if record.host != socket.gethostname():
        return False
    try:
        os.kill(record.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    fields = _stat(record.pid)
    if fields and fields[0] in ("Z", "X"):  # killed, not reaped yet
        return True
    return bool(record.started) and _started(record.pid) != record.started


def free_at_once(last: LeaseRecord | None, now_ms: int, interval_s: float) -> bool:
    """Whether the lease can be taken without watching for a renewal first."""
    if last is None or last.state == "released" or process_gone(last):
        return True
    return now_ms - last.at_ms > 3 * (interval_s + MARGIN_S) * 1000


class InstanceLease:
    def __init__(
        self,
        settings: Settings,
        name: str,
        on_lost: Callable[[LeaseRecord], None] | None = None,
    ) -> None:
        self.settings, self.name = settings, name
        self.interval = settings.instance_lease_interval_s
        self.on_lost = on_lost or _exit_lost
        pid = os.getpid()
        self.me = LeaseRecord(uuid.uuid4().hex, socket.gethostname(), pid, _started(pid), 0, "held")
        self.claim = -1
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._admin = AdminClient(client_config(settings))
        self._producer = Producer(
            {
                **client_config(settings),
                "acks": "all",
                # Not idempotent on purpose: a repeated lease record is harmless (the latest counts), while
                # an idempotent producer fails fatally (out-of-order sequence) after a broker restart and
                # would take the service down with it.
                "enable.idempotence": False,
                "socket.nagle.disable": True,
            }
        )
        self._consumer = Consumer(
            {
                **client_config(settings),
                "group.id": f"keel-lease-{self.me.token}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 50,
            }
        )

    # -- taking it ------------------------------------------------------------------------------
    def acquire(self) -> None:
        """Take the lease, or raise DuplicateInstance when a live process holds it."""
        ensure_topics(self._admin, [lease_topic()], self.settings.topic_replication)
        lookback_ms = int(3 * (self.interval + MARGIN_S) * 1000) + 1000
        tp = TopicPartition(INSTANCE_LEASES, 0, int(time.time() * 1000) - lookback_ms)
        [start] = self._consumer.offsets_for_times([tp], timeout=10)
        last: tuple[int, LeaseRecord] | None = None
        if start.offset >= 0:  # else: no lease record of anyone that recent
            self._consumer.assign([TopicPartition(INSTANCE_LEASES, 0, start.offset)])
            _, high = self._consumer.get_watermark_offsets(TopicPartition(INSTANCE_LEASES, 0), timeout=10)
            for offset, rec in self._read(time.monotonic() + 10, until_offset=high):
                last = (offset, rec)
        else:
            self._consumer.assign([TopicPartition(INSTANCE_LEASES, 0, OFFSET_END)])
        if not free_at_once(last[1] if last else None, int(time.time() * 1000), self.interval):
            assert last is not None
            self._watch_for_renewal(*last)
        self._write("held")
        self._thread = threading.Thread(target=self._renew, name="lease", daemon=True)
        self._thread.start()
        log.info("holding the lease of instance %s (pid %d on %s)", self.name, self.me.pid, self.me.host)

    def _watch_for_renewal(self, offset: int, held: LeaseRecord) -> None:
        deadline = time.monotonic() + self.interval + MARGIN_S
        for _, rec in self._read(deadline, first_only=True):
            if rec.state == "released":
                return
            raise DuplicateInstance(
                f"instance {self.name} is already running: pid {rec.pid} on host {rec.host} renewed its "
                f"lease {max(0, int(time.time() * 1000) - rec.at_ms)} ms ago. Refusing to start a second "
                "process with the same instance id (they would fence each other); give this one another "
                "--instance, or stop the other first."
            )
        log.warning(
            "instance %s: the lease of pid %d on %s was not renewed within %.1fs: taking it over",
            self.name,
            held.pid,
            held.host,
            self.interval + MARGIN_S,
        )

    def _read(
        self, deadline: float, until_offset: int | None = None, first_only: bool = False
    ) -> list[tuple[int, LeaseRecord]]:
        """This instance id's records from the consumer's position: up to `until_offset`, or the first
        one, or (neither) whatever is there now; never past `deadline`."""
        out: list[tuple[int, LeaseRecord]] = []
        while time.monotonic() < deadline:
            if until_offset is not None and self._position() >= until_offset:
                break
            msg = self._consumer.poll(0.05)
            if msg is None:
                if until_offset is None and not first_only:
                    break
                continue
            if msg.error() is not None or (msg.key() or b"").decode() != self.name or msg.value() is None:
                continue
            out.append((msg.offset() or 0, LeaseRecord(**json.loads(msg.value() or b"{}"))))
            if first_only:
                break
        return out

    def _position(self) -> int:
        [pos] = self._consumer.position([TopicPartition(INSTANCE_LEASES, 0)])
        return int(pos.offset)

    # -- holding it ------------------------------------------------------------------------------
    def _write(self, state: str) -> None:
        record = LeaseRecord(**{**asdict(self.me), "at_ms": int(time.time() * 1000), "state": state})
        if self.claim >= 0:
            record = LeaseRecord(**{**asdict(record), "claim": self.claim})
        offsets: list[int] = []
        self._producer.produce(
            INSTANCE_LEASES,
            key=self.name,
            value=json.dumps(asdict(record)).encode(),
            partition=0,
            on_delivery=lambda err, msg: offsets.append(-1 if err else (msg.offset() or 0)),
        )
        self._producer.flush(10)
        if self.claim < 0 and offsets and offsets[0] >= 0:
            self.claim = offsets[0]

    def _renew(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._write("held")
                for offset, rec in self._read(time.monotonic() + self.interval / 2):
                    if rec.token != self.me.token and rec.claim_offset(offset) > self.claim:
                        self._stop.set()
                        self.on_lost(rec)
                        return
            except Exception:  # a broker hiccup: the next renewal tries again
                log.exception("renewing the lease of instance %s failed", self.name)

    def release(self) -> None:
        """A clean stop: the next process under this id takes the lease at once, from any host."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        try:
            self._write("released")
        finally:
            self.close()

    def close(self) -> None:
        self._consumer.close()


def _exit_lost(rec: LeaseRecord) -> None:
    log.critical(
        "the lease of this instance was taken by pid %d on %s: another process runs under this instance "
        "id; exiting so the two do not fence each other",
        rec.pid,
        rec.host,
    )
    os._exit(75)


def hold_or_exit(settings: Settings, name: str) -> InstanceLease:
    """Take the lease of instance `name` or exit the process with a clear message (status 78)."""
    deadline = time.monotonic() + 60  # as long as init_transactions waits for a broker
    while True:
        lease = InstanceLease(settings, name)
        try:
            lease.acquire()
            return lease
        except DuplicateInstance as exc:
            log.critical("%s", exc)
            print(f"keel: {exc}", file=sys.stderr, flush=True)
            sys.exit(78)
        except KafkaException as exc:  # the broker is away (e.g. restarting): wait for it, don't crash-loop
            lease.close()
            if time.monotonic() > deadline:
                raise
            log.warning("taking the lease of instance %s: %s; retrying", name, exc)
            time.sleep(1.0)
