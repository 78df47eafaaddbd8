"""The local stack: broker, database, registry (and later every service) as background processes.

Each process gets a pid file under <data>/run and a log under <data>/logs, so `keel down` and
`keel status` work from any shell.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import httpx

from keel.schemas import REPO_ROOT
from keel.settings import Settings

KAFKA_SCRIPT = REPO_ROOT / "infra" / "kafka.sh"


def say(msg: str) -> None:
    print(f"keel: {msg}", flush=True)


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> None:
    """Poll `check` until it is true; raise TimeoutError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except Exception:  # not up yet: connection refused and the like
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout:.0f}s")
        time.sleep(interval)


def port_of(address: str) -> int:
    """Port of `host:port` or of a URL."""
    if "://" in address:
        return urlparse(address).port or 80
    return int(address.rsplit(":", 1)[1])


# -- Kafka (infra/kafka.sh) ---------------------------------------------------------------------------
# The local broker's ports: the client port P (SASL, the services), P + 1 (its controller) and P + 2, the
# loopback admin door of the operator tooling and the tests (PLAINTEXT, super user; dev/test only).
CONTROLLER_OFFSET, ADMIN_DOOR_OFFSET = 1, 2


def broker_port(settings: Settings) -> int:
    """The local broker's client port: where the services connect (KEEL_KAFKA_SERVICE_BOOTSTRAP when this
    process talks to the broker through the admin door)."""
    return port_of((settings.kafka_service_bootstrap or settings.kafka_bootstrap).split(",")[0])


def kafka_env(settings: Settings) -> dict[str, str]:
    port = broker_port(settings)
    return {
        **os.environ,
        "KEEL_DATA_DIR": str(settings.data_dir),
        "KEEL_KAFKA_PORT": str(port),
        "KEEL_KAFKA_CONTROLLER_PORT": str(port + CONTROLLER_OFFSET),
        "KEEL_KAFKA_ADMIN_PORT": str(port + ADMIN_DOOR_OFFSET),
    }


def _local_admin_door(settings: Settings) -> bool:
    """Whether the broker at the bootstrap is this data dir's local broker, with an admin door."""
    try:
        config = (settings.data_dir / "kafka" / "server.properties").read_text()
    except OSError:
        return False
    return f"CLIENT://127.0.0.1:{broker_port(settings)}," in config and "ADMIN://" in config


def local_operator(settings: Settings) -> Settings:
    """The operator tooling's settings against the local broker (infra/kafka.sh): its own clients through
    the loopback admin door, the services it starts on the client port, each as its own principal
    (keel.acl). Settings that name credentials or a service listener, or another broker, are kept."""
    if settings.kafka_service_bootstrap or settings.kafka_security_protocol != "PLAINTEXT":
        return settings
    if not _local_admin_door(settings):
        return settings
    host = settings.kafka_bootstrap.split(",")[0].rsplit(":", 1)[0]
    door = f"{host}:{broker_port(settings) + ADMIN_DOOR_OFFSET}"
    return settings.model_copy(
        update={"kafka_bootstrap": door, "kafka_service_bootstrap": settings.kafka_bootstrap}
    )


def apply_acl_table(settings: Settings) -> tuple[int, int]:
    """Users and ACLs of keel.acl on the broker, as this process's (super user) principal."""
    from confluent_kafka.admin import AdminClient

    from keel.acl_apply import apply_acls, upsert_users
    from keel.producer import client_config

    admin = AdminClient(client_config(settings))
    upsert_users(admin, settings.kafka_credential_seed)
    return apply_acls(admin)


def process_env(settings: Settings, proc: Background, env: dict[str, str] | None = None) -> dict[str, str]:
    """A child's environment: this one, and when the services connect as their own principals
    (KEEL_KAFKA_SERVICE_BOOTSTRAP), the principal's listener and credentials, never the operator's."""
    from keel.acl_apply import OPERATOR_ONLY_ENV, principal_env

    out = dict(env or os.environ)
    if settings.kafka_service_bootstrap and proc.principal:
        for name in OPERATOR_ONLY_ENV:
            out.pop(name, None)
        out.update(principal_env(settings, proc.principal, settings.kafka_service_bootstrap))
    return out


def kafka(settings: Settings, action: str, check: bool = True) -> int:
    """Run `infra/kafka.sh ACTION` (install, start, stop, status, kill) for these settings."""
    return subprocess.run(
        ["bash", str(KAFKA_SCRIPT), action], env=kafka_env(settings), check=check
    ).returncode


# -- background processes -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Background:
    name: str
    argv: list[str]
    ready: Callable[[], bool] | None = None
    ready_timeout: float = 60.0
    # The broker principal it runs as (a row of keel.acl), when the services connect as their own.
    principal: str | None = None


def _pid_file(settings: Settings, name: str) -> Path:
    return settings.data_dir / "run" / f"{name}.pid"


def log_file(settings: Settings, name: str) -> Path:
    return settings.data_dir / "logs" / f"{name}.log"


def running_pid(settings: Settings, name: str) -> int | None:
    path = _pid_file(settings, name)
    try:
        pid = int(path.read_text().strip())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    try:  # a reaped child of ours is gone even if its pid is reused: check it is no zombie
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "Z":
            return None
    except (FileNotFoundError, IndexError):
        pass
    return pid


def start_background(settings: Settings, proc: Background, env: dict[str, str] | None = None) -> int:
    """Start `proc` detached (its own session) unless it already runs; wait until it is ready."""
    pid = running_pid(settings, proc.name)
    if pid is None:
        log = log_file(settings, proc.name)
        log.parent.mkdir(parents=True, exist_ok=True)
        _pid_file(settings, proc.name).parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            child = subprocess.Popen(
                proc.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=REPO_ROOT,
                env=process_env(settings, proc, env),
            )
        pid = child.pid
        _pid_file(settings, proc.name).write_text(f"{pid}\n")
    if proc.ready is not None:
        try:
            wait_until(
                lambda: running_pid(settings, proc.name) is not None and proc.ready(),  # type: ignore[misc]
                proc.ready_timeout,
                proc.name,
            )
        except TimeoutError:
            tail = log_file(settings, proc.name).read_text(errors="replace")[-2000:]
            raise TimeoutError(f"{proc.name} did not become ready; last log lines:\n{tail}") from None
    return pid


def stop_background(settings: Settings, name: str, timeout: float = 15.0) -> bool:
    """SIGTERM, wait, then SIGKILL; and whatever of its session is left is killed too. Returns whether the
    process was running. A supervisor passes the SIGTERM on to its service; killed itself, it would leave
    a service that did not stop in time running (holding its instance lease, so the next `keel up`'s
    would refuse to start). Started in its own session, the process's pid is its process group's id."""
    pid = running_pid(settings, name)
    if pid is None:
        _pid_file(settings, name).unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    try:
        wait_until(lambda: running_pid(settings, name) is None, timeout, f"{name} to stop", 0.1)
    except TimeoutError:
        pass
    try:  # whatever is left of its session: all of it past the timeout, else nothing (or an orphan)
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group is gone
    wait_until(lambda: running_pid(settings, name) is None, 5, f"{name} to die", 0.1)
    _pid_file(settings, name).unlink(missing_ok=True)
    return True


def http_ok(url: str) -> Callable[[], bool]:
    return lambda: httpx.get(url, timeout=1.0).status_code < 500


def registry_process(settings: Settings) -> Background:
    port = port_of(settings.schema_registry_url)
    return Background(
        "registry",
        [sys.executable, "-m", "services.registry", "--port", str(port)],
        ready=http_ok(f"{settings.schema_registry_url}/subjects"),
        principal="registry",
    )


# -- the simulated outside world and the services --------------------------------------------------
SERVICES = ("scheduler", "executor", "adapters", "ledger", "budget", "projector", "notifier")


def simulator_processes() -> list[Background]:
    """The simulated outside world on the ports the adapters and router are configured with: the email
    provider, CRM and model server, the payments provider (docs/examples), the helpdesk (the refund
    provider without key support) and a webhook receiver for the notifier (KEEL_RECEIVER_URL)."""
    from services.adapters.config import AdapterSettings
    from services.executor.router import RouterSettings

    tools = AdapterSettings()
    urls = {
        "email": tools.base_url("email"),
        "crm": tools.base_url("crm"),
        "model": RouterSettings().model_url,
        # Defaults: the base_url of the providers' tool definitions (docs/examples/tools, tools/).
        "payments": tools.base_url("payments", "http://127.0.0.1:8704"),
        "helpdesk": tools.base_url("helpdesk", "http://127.0.0.1:8705"),
        "receiver": tools.base_url("receiver", "http://127.0.0.1:8706"),
    }
    return [
        Background(
            f"sim-{name}",
            [sys.executable, "-m", "infra.simulators", name, "--port", str(port_of(url))],
            ready=http_ok(f"http://127.0.0.1:{port_of(url)}/_stats"),
        )
        for name, url in urls.items()
    ]


def service_process(name: str, instance: str = "0") -> Background:
    return Background(
        f"{name}-{instance}",
        [sys.executable, "-m", f"services.{name}", "--instance", instance],
        principal=name,
    )


def api_process(url: str) -> Background:
    return Background(
        "api",
        [sys.executable, "-m", "services.api", "--port", str(port_of(url))],
        ready=http_ok(f"{url}/healthz"),
        principal="api",
    )


def supervised(proc: Background) -> Background:
    """The same process, run under keel_ops.supervise (restarted when it dies)."""
    argv = [sys.executable, "-m", "keel_ops.supervise", "--", *proc.argv]
    return Background(proc.name, argv, proc.ready, proc.ready_timeout, proc.principal)
