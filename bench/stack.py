"""The bench's own Keel stack: what `keel up` starts, started (and stopped) by the bench itself.

Whatever already answers (a broker, a registry, a database given by DATABASE_URL) is used as it is;
whatever the bench starts, it stops. The services run without a supervisor, so each one's pid is the
service itself and /proc tells its CPU time and peak memory.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

import httpx
from confluent_kafka.admin import AdminClient

from keel import db
from keel.producer import client_config
from keel.schemas import REPO_ROOT
from keel.serde import register_contracts, registry_client
from keel.settings import Settings
from keel.topics import catalogue, ensure_topics
from keel_ops.stack import (
    SERVICES,
    Background,
    api_process,
    apply_acl_table,
    kafka,
    local_operator,
    port_of,
    registry_process,
    running_pid,
    service_process,
    simulator_processes,
    start_background,
    stop_background,
)

PREFIX = "bench-"
RESULTS = REPO_ROOT / "var" / "bench"  # figures, charts, the peers' environments and logs
STACK_DATA = REPO_ROOT / "var" / "bench-stack"


def use_own_data_dir() -> None:
    """The data directory of what the bench starts (broker log, database, blobs, pid files, logs):
    var/bench-stack unless KEEL_DATA_DIR names one, set for this process and everything it starts. Runs a
    bench leaves unfinished (a burst cut off by its timeout) then never reach the stack `keel up` (and
    `make demo`) starts under var/, which would otherwise pick them up and wait behind them."""
    os.environ.setdefault("KEEL_DATA_DIR", str(STACK_DATA))


def say(msg: str) -> None:
    print(f"bench: {msg}", flush=True)


def _renamed(proc: Background) -> Background:
    # Own pid files, so the bench never stops (or is mistaken for) a `keel up` stack.
    return Background(PREFIX + proc.name, proc.argv, proc.ready, proc.ready_timeout, proc.principal)


def _port_taken(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _broker_answers(bootstrap: str) -> bool:
    # A plain connect: a Kafka client would keep logging refused connections long after the answer.
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    with socket.socket() as s:
        s.settimeout(3)
        return s.connect_ex((host or "127.0.0.1", int(port))) == 0


def _registry_answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/subjects", timeout=2, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class BenchStack:
    settings: Settings
    started: list[str] = field(default_factory=list)
    kafka_started: bool = False
    postgres_started: bool = False
    instances: int = 1  # of every service (each is a consumer group: instances share its partitions)

    def service_processes(self) -> list[Background]:
        return [_renamed(service_process(s, str(i))) for s in SERVICES for i in range(self.instances)]

    def processes(self) -> list[Background]:
        sims = [_renamed(p) for p in simulator_processes()]
        return [*sims, *self.service_processes(), _renamed(api_process(self.settings.api_url))]

    def service_pids(self) -> dict[str, int]:
        """`scheduler`, `executor-1`, ..., `api` -> pid of each running Keel process the bench started
        (an instance suffix only when there are several)."""
        out = {}
        for proc in self.processes():
            name = proc.name.removeprefix(PREFIX)
            pid = running_pid(self.settings, proc.name)
            if pid is not None and not name.startswith("sim-"):
                out[name.removesuffix("-0") if self.instances == 1 else name] = pid
        return out

    def infra_pids(self) -> dict[str, int]:
        """`infra:kafka` -> the broker's pid when the bench started it (its CPU is shown, not counted)."""
        pid_file = self.settings.data_dir / "kafka" / "kafka.pid"
        if not self.kafka_started or not pid_file.exists():
            return {}
        digits = "".join(c for c in pid_file.read_text() if c.isdigit())
        return {"infra:kafka": int(digits)} if digits else {}

    def start_services(self) -> None:
        """Start the services and the API again (after stop_services), with `instances` of each."""
        for proc in [*self.service_processes(), _renamed(api_process(self.settings.api_url))]:
            self._start(proc)

    def up(self, keel: bool = True, simulators: bool = True) -> None:
        """Infrastructure always; the simulators and Keel's services and API when asked for."""
        s = self.settings
        if not _broker_answers(s.kafka_bootstrap):
            say(f"starting Kafka on {s.kafka_bootstrap}")
            kafka(s, "start")
            self.kafka_started = True
        # The local broker authenticates its clients: the bench's own clients (and the floor) go through
        # its loopback admin door, the services it starts connect as their own principals (keel.acl).
        # Callers read `stack.settings` after up().
        self.settings = s = local_operator(s)
        if s.kafka_service_bootstrap:
            apply_acl_table(s)
        admin = AdminClient(client_config(s))
        ensure_topics(admin, catalogue(s), s.topic_replication)
        if not _registry_answers(s.schema_registry_url):
            say(f"starting the schema registry on {s.schema_registry_url}")
            self._start(_renamed(registry_process(s)))
        register_contracts(registry_client(s.schema_registry_url))
        if not s.db_url() and not db.embedded_running(s):
            say("starting the embedded PostgreSQL")
            self.postgres_started = True
        with db.connect(s) as conn:
            db.migrate(conn)
        procs = [
            p
            for p in self.processes()
            if (simulators and p.name.startswith(PREFIX + "sim-"))
            or (keel and not p.name.startswith(PREFIX + "sim-"))
        ]
        taken = [p.name for p in procs if self._port(p) > 0 and _port_taken(self._port(p))]
        if taken:
            raise RuntimeError(
                f"ports of {', '.join(taken)} are in use: stop the other stack (`keel down`) first"
            )
        for proc in procs:
            say(f"starting {proc.name.removeprefix(PREFIX)}")
            self._start(proc)

    @staticmethod
    def _port(proc: Background) -> int:
        argv = proc.argv
        return port_of(f"x:{argv[argv.index('--port') + 1]}") if "--port" in argv else -1

    def _start(self, proc: Background) -> None:
        self.started.append(proc.name)
        os.environ.setdefault("KEEL_ENV", "dev")  # a loopback stack: its API takes the development keys
        start_background(self.settings, proc)

    def stop_services(self) -> None:
        """Stop Keel's services and API, keeping the simulators (and the infrastructure) up."""
        for name in reversed(self.started):
            if name.removeprefix(PREFIX).split("-")[0] in (*SERVICES, "api"):
                stop_background(self.settings, name)
                self.started.remove(name)

    def down(self) -> None:
        for name in reversed(self.started):
            stop_background(self.settings, name)
        self.started.clear()
        if self.kafka_started:
            say("stopping Kafka")
            kafka(self.settings, "stop", check=False)
        if self.postgres_started:
            say("stopping the embedded PostgreSQL")
            db.stop_embedded(self.settings)
