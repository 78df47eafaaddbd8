"""The chaos monkey: kill -9 random service instances (and the broker) and bring them back, measuring
how long each takes to resume; a supervisor restarts anything that dies on its own."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

from keel.settings import Settings
from keel.stack import kafka, log_file, running_pid, service_process, start_background

SCALING = ("scheduler", "executor", "adapters", "ledger", "projector")
INSTANCES = ("0", "1")


@dataclass
class Figures:
    kills: list[str] = field(default_factory=list)
    broker_kills: int = 0
    crashes_restarted: list[str] = field(default_factory=list)
    # (instance, killed at, seconds to its assignment) for every measured kill
    recoveries: list[tuple[str, float, float]] = field(default_factory=list)
    # while the broker is down and for a grace period after it answers again, no member can rejoin:
    # kills then measure the broker's recovery, not the service's
    broker_outages: list[tuple[float, float]] = field(default_factory=list)
    BROKER_GRACE_S = 10.0

    def during_broker_outage(self, at: float) -> bool:
        return any(start <= at <= end + self.BROKER_GRACE_S for start, end in self.broker_outages)

    def recovery_while_broker_up(self) -> dict[str, float]:
        """Worst recovery per service, of the kills made while the broker was up."""
        worst: dict[str, float] = {}
        for name, at, seconds in self.recoveries:
            if not self.during_broker_outage(at):
                service = name.rsplit("-", 1)[0]
                worst[service] = max(worst.get(service, 0.0), seconds)
        return worst


def _assigned_after(settings: Settings, name: str, since: float) -> float | None:
    """When the instance's log last says it was assigned partitions, if that was after `since`."""
    try:
        lines = log_file(settings, name).read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return None
    for line in reversed(lines):
        if " assigned " in line:
            try:
                at = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            except ValueError:
                continue
            return at if at >= since else None
    return None


class Monkey:
    def __init__(self, settings: Settings, seed: int) -> None:
        self.settings, self.rng = settings, random.Random(seed)
        self.figures = Figures()
        self._stop = threading.Event()
        self._lock = threading.Lock()  # kills and supervision never overlap

    def instances(self) -> list[str]:
        return [f"{s}-{i}" for s in SCALING for i in INSTANCES]

    def start_all(self) -> None:
        for s in SCALING:
            for i in INSTANCES:
                start_background(self.settings, service_process(s, i))

    def kill_one(self) -> str:
        name = self.rng.choice(self.instances())
        service, instance = name.rsplit("-", 1)
        with self._lock:
            pid = running_pid(self.settings, name)
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
            killed_at = time.time()
            time.sleep(self.rng.uniform(0.0, 1.0))  # down for a moment, as a crashed pod would be
            start_background(self.settings, service_process(service, instance))
        self.figures.kills.append(name)
        threading.Thread(target=self._measure, args=(name, killed_at), daemon=True).start()
        return name

    def kill_broker(self) -> None:
        with self._lock:
            down = time.time()
            kafka(self.settings, "kill")
            time.sleep(self.rng.uniform(1.0, 3.0))
            kafka(self.settings, "start")
            self.figures.broker_outages.append((down, time.time()))
        self.figures.broker_kills += 1

    def _measure(self, name: str, killed_at: float) -> None:
        deadline = time.time() + 60
        while time.time() < deadline and not self._stop.is_set():
            at = _assigned_after(self.settings, name, killed_at)
            if at is not None:
                self.figures.recoveries.append((name, killed_at, at - killed_at))
                return
            time.sleep(0.2)

    def supervise(self) -> None:
        """Restart instances that died on their own (as a process supervisor would)."""
        while not self._stop.wait(1.0):
            with self._lock:
                for name in self.instances():
                    if running_pid(self.settings, name) is None:
                        service, instance = name.rsplit("-", 1)
                        start_background(self.settings, service_process(service, instance))
                        self.figures.crashes_restarted.append(name)

    def stop(self) -> None:
        self._stop.set()
