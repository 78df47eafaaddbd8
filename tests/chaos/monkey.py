"""The chaos monkey: kill -9 service instances (restarted under the same id, or left down so another
instance takes their partitions over), the registry, the API and the broker; a supervisor restarts
anything that dies on its own. Recovery is measured from outside (tests/chaos/recovery.py)."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field

from recovery import OutputWatch, owned_partitions, projector_moved_after

from keel.settings import Settings
from keel_ops.stack import (
    Background,
    kafka,
    registry_process,
    running_pid,
    service_process,
    start_background,
)

SCALING = ("scheduler", "executor", "adapters", "ledger", "budget", "projector")
INSTANCES = ("0", "1")


@dataclass
class Figures:
    kills: list[str] = field(default_factory=list)
    broker_kills: int = 0
    other_kills: list[str] = field(default_factory=list)  # registry, api
    crashes_restarted: list[str] = field(default_factory=list)
    # (instance, how: "restart" | "takeover", killed at, seconds to the first output of its partitions)
    recoveries: list[tuple[str, str, float, float]] = field(default_factory=list)
    unmeasured: list[str] = field(default_factory=list)  # no output of its partitions within a minute
    # while the broker is down and for a grace period after it answers again, no member can rejoin:
    # kills then measure the broker's recovery, not the service's
    broker_outages: list[tuple[float, float]] = field(default_factory=list)
    BROKER_GRACE_S = 10.0

    def during_broker_outage(self, at: float, seconds: float = 0.0) -> bool:
        """Whether the recovery from a kill at `at` (lasting `seconds`) overlapped a broker outage."""
        return any(
            at <= end + self.BROKER_GRACE_S and at + seconds >= start for start, end in self.broker_outages
        )

    def worst(self, how: str) -> dict[str, float]:
        """Worst recovery per service of one kind of kill, of those made while the broker was up."""
        worst: dict[str, float] = {}
        for name, kind, at, seconds in self.recoveries:
            if kind == how and not self.during_broker_outage(at, seconds):
                service = name.rsplit("-", 1)[0]
                worst[service] = max(worst.get(service, 0.0), seconds)
        return worst


class Monkey:
    def __init__(self, settings: Settings, seed: int, api: Background | None = None) -> None:
        self.settings, self.rng, self.api = settings, random.Random(seed), api
        self.figures = Figures()
        self.watch = OutputWatch(settings)
        self.down: set[str] = set()  # instances left down on purpose (take-over in progress)
        self._stop = threading.Event()
        self._lock = threading.Lock()  # kills and supervision never overlap

    def instances(self) -> list[str]:
        return [f"{s}-{i}" for s in SCALING for i in INSTANCES]

    def start_all(self) -> None:
        for s in SCALING:
            for i in INSTANCES:
                start_background(self.settings, service_process(s, i))

    def _kill(self, name: str) -> None:
        pid = running_pid(self.settings, name)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)

    def kill_one(self) -> str:
        """kill -9 a random instance and start it again under the same id a moment later."""
        name = self.rng.choice([n for n in self.instances() if n not in self.down])
        service, instance = name.rsplit("-", 1)
        with self._lock:
            owned = owned_partitions(self.settings, service, instance)
            self._kill(name)
            killed_at = time.time()
            time.sleep(self.rng.uniform(0.0, 1.0))  # down for a moment, as a crashed pod would be
            start_background(self.settings, service_process(service, instance))
        self.figures.kills.append(name)
        self._measure_later(name, "restart", killed_at, owned)
        return name

    def kill_for_good(self, down_for: float) -> str:
        """kill -9 an instance and keep it down, so its partitions move to the other instance."""
        name = self.rng.choice([n for n in self.instances() if n not in self.down])
        service, instance = name.rsplit("-", 1)
        with self._lock:
            owned = owned_partitions(self.settings, service, instance)
            self.down.add(name)
            self._kill(name)
            killed_at = time.time()
        self.figures.kills.append(f"{name} (left down {down_for:.0f}s)")
        self._measure_later(name, "takeover", killed_at, owned)

        def back() -> None:
            if not self._stop.wait(down_for):
                with self._lock:
                    start_background(self.settings, service_process(service, instance))
            self.down.discard(name)

        threading.Thread(target=back, daemon=True).start()
        return name

    def kill_registry(self) -> None:
        with self._lock:
            self._kill("registry")
            time.sleep(self.rng.uniform(1.0, 3.0))
            start_background(self.settings, registry_process(self.settings))
        self.figures.other_kills.append("registry")

    def kill_api(self) -> None:
        if self.api is None:
            return
        with self._lock:
            self._kill(self.api.name)
            time.sleep(self.rng.uniform(0.5, 2.0))
            start_background(self.settings, self.api)
        self.figures.other_kills.append("api")

    def kill_broker(self) -> None:
        with self._lock:
            down = time.time()
            kafka(self.settings, "kill")
            time.sleep(self.rng.uniform(1.0, 3.0))
            kafka(self.settings, "start")
            self.figures.broker_outages.append((down, time.time()))
        self.figures.broker_kills += 1

    def _measure_later(self, name: str, how: str, killed_at: float, owned: set[int] | None) -> None:
        args = (name, how, killed_at, owned if owned else set(range(self.settings.topic_partitions)))
        threading.Thread(target=self._measure, args=args, daemon=True).start()

    def _measure(self, name: str, how: str, killed_at: float, owned: set[int]) -> None:
        service = name.rsplit("-", 1)[0]
        if service == "projector":
            db_url = self.settings.db_url()
            at = projector_moved_after(db_url, owned, killed_at, 60) if db_url else None
        else:
            if service == "budget":
                # Its input is keyed by tenant, its answers by run: they land on any partition. Its
                # recovery is the first answer after the kill (a coarser measure than the others').
                owned = set(range(self.settings.topic_partitions))
            at = None
            deadline = time.time() + 60
            while at is None and time.time() < deadline and not self._stop.is_set():
                at = self.watch.first_after(service, owned, killed_at)
                time.sleep(0.1)
        if at is None:
            self.figures.unmeasured.append(f"{name} ({how})")
        else:
            self.figures.recoveries.append((name, how, killed_at, at - killed_at))

    def supervise(self) -> None:
        """Restart instances that died on their own (as a process supervisor would)."""
        while not self._stop.wait(1.0):
            with self._lock:
                for name in self.instances():
                    if name not in self.down and running_pid(self.settings, name) is None:
                        service, instance = name.rsplit("-", 1)
                        start_background(self.settings, service_process(service, instance))
                        self.figures.crashes_restarted.append(name)
                if self.api is not None and running_pid(self.settings, self.api.name) is None:
                    start_background(self.settings, self.api)
                if running_pid(self.settings, "registry") is None:
                    start_background(self.settings, registry_process(self.settings))

    def stop(self) -> None:
        self._stop.set()
        self.watch.close()
