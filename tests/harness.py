"""The whole stack as real processes (simulators, services, API) for the e2e and chaos tests."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import psycopg
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from helpers import unique, wait_for

from keel.contracts import RunEvent
from keel.serde import Serde, registry_client
from keel.settings import Settings
from keel.topics import RUN_EVENTS
from keel_ops.stack import (
    Background,
    api_process,
    running_pid,
    service_process,
    simulator_processes,
    start_background,
    stop_background,
)
from services.projector.rebuild import build_into
from services.projector.schema import differences, drop_schema
from services.projector.service import TOPICS as PROJECTED

# Ports apart from a developer's `keel up`, so both can run at once.
E2E_ENV = {
    "KEEL_EMAIL_URL": "http://127.0.0.1:18701",
    "KEEL_CRM_URL": "http://127.0.0.1:18702",
    "KEEL_MODEL_URL": "http://127.0.0.1:18703/v1",
    # The provider of refund@1, the example tool defined only as data (docs/examples/tools).
    "KEEL_PAYMENTS_URL": "http://127.0.0.1:18704",
    # The helpdesk: the support_triage agent's customers and refunds (no Idempotency-Key support).
    "KEEL_HELPDESK_URL": "http://127.0.0.1:18705",
    "KEEL_TOOL_DIRS": ":".join(
        str(d)
        for d in (Path(__file__).parents[1] / "docs" / "examples" / "tools", Path(__file__).parent / "tools")
    ),
    "KEEL_TOOL_CREDENTIALS": json.dumps(
        {
            "*": {
                "email": "sim-email-token",
                "crm": "sim-crm-token",
                "payments": "sim-payments-token",
                "helpdesk": "sim-helpdesk-token",
            }
        }
    ),
    "KEEL_TOOL_TIMEOUT_S": "1.0",
    "KEEL_POLL_TIMEOUT_S": "0.05",
    "KEEL_STALL_TIMEOUT_S": "45",
    "KEEL_TXN_TIMEOUT_S": "8",
    "KEEL_BREAKER_OPEN_MS": "1500",
    "KEEL_API_URL": "http://127.0.0.1:18080",
    "KEEL_WORKFLOW_DIRS": str(Path(__file__).parent / "workflows"),
    # The notifier (docs/notifications.md): tenant acme's webhooks go to the receiver simulator, and so
    # do those of a second tenant, on their own path (tests/e2e/test_notifications.py).
    "KEEL_RECEIVER_URL": "http://127.0.0.1:18706",
    "KEEL_PUBLIC_URL": "http://127.0.0.1:18080",
    "KEEL_WEBHOOK_TIMEOUT_S": "1.0",
    "KEEL_WEBHOOK_BACKOFF_S": "0.2",
    "KEEL_WEBHOOK_BACKOFF_MAX_S": "2.0",
    # Every service serves /metrics on base + 10 x its slot + its instance (keel.metricsserver).
    "KEEL_METRICS_BASE_PORT": "19400",
    "KEEL_METRICS_LAG_INTERVAL_S": "1",
}
WEBHOOK_SECRETS = {"acme": "e2e-acme-webhook-secret", "hooks-other": "e2e-other-webhook-secret"}
E2E_ENV["KEEL_WEBHOOKS"] = json.dumps(
    {
        "acme": {"url": f"{E2E_ENV['KEEL_RECEIVER_URL']}/hook/acme", "secret": WEBHOOK_SECRETS["acme"]},
        "hooks-other": {
            "url": f"{E2E_ENV['KEEL_RECEIVER_URL']}/hook/other",
            "secret": WEBHOOK_SECRETS["hooks-other"],
        },
    }
)
# A group of its own per session, starting at the topic's end: no backlog of earlier sessions' runs.
# Under the notifier's group prefix, which its broker principal may use (keel.acl).
E2E_ENV["KEEL_NOTIFIER_GROUP"] = unique("keel-notifier-e2e")
# Tenants with a small day budget each (docs/budgets.md), unique per test session: the enforcer's day
# scopes outlive a session on a shared broker.
BUDGET_TENANTS = [(unique("budget-t"), 0.0001) for _ in range(3)]
E2E_ENV["KEEL_BUDGET_LIMITS"] = json.dumps({"tenant_day_usd": dict(BUDGET_TENANTS)})
E2E_ENV["KEEL_BUDGETS"] = "true"  # whatever the environment says: the enforcer runs here
E2E_ENV["KEEL_ENV"] = "dev"  # the API accepts the development keys (docs/tenancy.md, section 1)
CORE_SERVICES = ("scheduler", "executor", "adapters", "ledger", "budget", "projector", "notifier")


class EventLog:
    """Every RunEvent on the topic, by run, read continuously from the beginning (the ground truth)."""

    def __init__(self, settings: Settings) -> None:
        self.serde = Serde(registry_client(settings.schema_registry_url))
        self.by_run: dict[str, list[RunEvent]] = defaultdict(list)
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._consumer = Consumer(
            {
                "bootstrap.servers": settings.kafka_bootstrap,
                "group.id": unique("e2e-log"),
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
            }
        )
        parts = self._consumer.list_topics(RUN_EVENTS, timeout=10).topics[RUN_EVENTS].partitions
        self._consumer.assign([TopicPartition(RUN_EVENTS, p, OFFSET_BEGINNING) for p in parts])
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self._consumer.poll(0.1)
            if msg is None or msg.error():
                continue
            event = self.serde.decode(RUN_EVENTS, msg.value())
            with self._lock:
                self.by_run[event.run_id].append(event)
        self._consumer.close()

    def of(self, run_id: str) -> list[RunEvent]:
        with self._lock:
            return list(self.by_run.get(run_id, []))

    def kinds(self, run_id: str) -> list[str]:
        return [e.event for e in self.of(run_id)]

    def wait_terminal(self, run_id: str, timeout: float = 60.0) -> str:
        wait_for(
            lambda: any(k in ("completed", "failed", "canceled", "quarantined") for k in self.kinds(run_id)),
            timeout,
            f"run {run_id} to end; events so far: {self.kinds(run_id)}",
        )
        return next(k for k in self.kinds(run_id) if k in ("completed", "failed", "canceled", "quarantined"))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


class Simulators:
    def __init__(self) -> None:
        self.urls = {
            "email": E2E_ENV["KEEL_EMAIL_URL"],
            "crm": E2E_ENV["KEEL_CRM_URL"],
            "model": E2E_ENV["KEEL_MODEL_URL"].removesuffix("/v1"),
            "payments": E2E_ENV["KEEL_PAYMENTS_URL"],
            "helpdesk": E2E_ENV["KEEL_HELPDESK_URL"],
            "receiver": E2E_ENV["KEEL_RECEIVER_URL"],
        }

    def stats(self, name: str) -> dict:
        return httpx.get(f"{self.urls[name]}/_stats").json()

    def fault(self, name: str, **rule: object) -> None:
        httpx.post(f"{self.urls[name]}/_faults", json=rule).raise_for_status()

    def mode(self, name: str, **mode: object) -> None:
        """Set how a simulator deduplicates (see infra/simulators: key, none, in-flight refusal)."""
        httpx.post(f"{self.urls[name]}/_mode", json=mode).raise_for_status()

    def deliveries(self, event_id: str) -> list[dict]:
        """What the webhook receiver got for one notification, in arrival order."""
        url = f"{self.urls['receiver']}/_deliveries"
        return httpx.get(url, params={"event_id": event_id}).json()["deliveries"]

    def reset(self) -> None:
        for url in self.urls.values():
            httpx.post(f"{url}/_reset").raise_for_status()


def kill(settings: Settings, service: str, instance: str = "0") -> None:
    """SIGKILL a running service instance: no goodbye to the broker, no cleanup."""
    name = f"{service}-{instance}"
    pid = running_pid(settings, name)
    assert pid is not None, f"{name} is not running"
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: running_pid(settings, name) is None, 10, f"{name} to die")


def kill_and_restart(settings: Settings, service: str, instance: str = "0") -> None:
    kill(settings, service, instance)
    start_background(settings, service_process(service, instance))


def notifier_ready(settings: Settings) -> Callable[[], bool]:
    """The notifier's group has a committed offset on every partition of keel.run-events: from then on
    no event is missed, whenever the notifier gets its partitions (it starts a new group at the end)."""

    def ready() -> bool:
        probe = Consumer(
            {
                "bootstrap.servers": settings.kafka_bootstrap,
                "group.id": E2E_ENV["KEEL_NOTIFIER_GROUP"],  # reads the group's offsets, never joins it
                "enable.auto.commit": False,
            }
        )
        try:
            parts = probe.list_topics(RUN_EVENTS, timeout=5).topics[RUN_EVENTS].partitions
            found = probe.committed([TopicPartition(RUN_EVENTS, p) for p in parts], timeout=5)
            return all(tp.offset >= 0 for tp in found)
        finally:
            probe.close()

    return ready


def _processes(settings: Settings) -> list[Background]:
    services = [service_process(name) for name in CORE_SERVICES]
    return (
        simulator_processes()  # payments, helpdesk and the webhook receiver included, on E2E_ENV's ports
        + [replace(p, ready=notifier_ready(settings)) if p.name == "notifier-0" else p for p in services]
        + [api_process(E2E_ENV["KEEL_API_URL"])]
    )


@pytest.fixture(scope="session")
def keel(stack: Settings) -> Iterator[tuple[EventLog, Simulators]]:
    os.environ.update(E2E_ENV)
    procs = _processes(stack)
    try:
        for proc in procs:
            stop_background(stack, proc.name)  # leftovers of an interrupted session
            start_background(stack, proc)
        log = EventLog(stack)
        yield log, Simulators()
        log.close()
    finally:
        for proc in reversed(procs):
            stop_background(stack, proc.name)


@pytest.fixture
def sims(keel: tuple[EventLog, Simulators]) -> Simulators:
    keel[1].reset()
    return keel[1]


@pytest.fixture
def events(keel: tuple[EventLog, Simulators]) -> EventLog:
    return keel[0]


def settled_projector_offsets(
    conn: psycopg.Connection, quiet_s: float = 1.5, timeout: float = 90.0
) -> dict[tuple[str, int], int]:
    """The live projectors' stored offsets (every topic they project), once they have not moved for
    `quiet_s`."""
    state: dict = {"offsets": None, "since": time.monotonic()}

    def quiet() -> bool:
        rows = conn.execute("SELECT topic, partition, next_offset FROM keel.projector_offsets").fetchall()
        offsets = {(t, p): o for t, p, o in rows if t in PROJECTED}
        if offsets != state["offsets"]:
            state["offsets"], state["since"] = offsets, time.monotonic()
        return time.monotonic() - state["since"] >= quiet_s

    wait_for(quiet, timeout, "the projectors to settle")
    return dict(state["offsets"])


def rebuilt_projection_differences(
    settings: Settings, conn: psycopg.Connection
) -> tuple[dict[str, int], int]:
    """Rebuild the projections from the topic into a shadow schema, up to where the live ones stand,
    and compare: (rows differing per table, events in the shadow)."""
    until = settled_projector_offsets(conn)
    shadow = unique("shadow").replace("-", "_")
    try:
        build_into(settings, PROJECTED, shadow, until)
        events = conn.execute(f"SELECT count(*) FROM {shadow}.events").fetchone()[0]
        return differences(conn, "keel", shadow), events
    finally:
        drop_schema(conn, shadow)
