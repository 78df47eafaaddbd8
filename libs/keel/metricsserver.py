"""Where a Kafka service serves /metrics: a small HTTP server beside its loop, on a port of its own.

Off unless configured (docs/observability.md), so tests and tools that start services never fight over
a port. `keel up` turns it on with a base port; every service instance on a machine then derives its
own: base + 10 x the service's slot + the instance number.
"""

from __future__ import annotations

import logging

from prometheus_client import REGISTRY, start_http_server
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from keel.metrics import metrics

log = logging.getLogger(__name__)

# A service's slot in a machine's port range (base + 10 x slot + instance). Append only: a slot that
# moves moves every dashboard's scrape target.
SLOTS = {
    "scheduler": 0,
    "executor": 1,
    "adapters": 2,
    "ledger": 3,
    "budget": 4,
    "projector": 5,
    "notifier": 6,
}
INSTANCES_PER_SLOT = 10
DEFAULT_BASE_PORT = 9400  # what `keel up` uses when KEEL_METRICS_BASE_PORT is not set


class MetricsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KEEL_METRICS_", extra="ignore")

    # This process's port (0: any free port, logged). Wins over the base port.
    port: int | None = Field(default=None, ge=0, le=65535)
    # Every service instance's port derived from one base (see SLOTS); unset with `port`: no server.
    base_port: int | None = Field(default=None, ge=1, le=65535)
    host: str = "127.0.0.1"
    # How often consumer lag is sampled (0: never).
    lag_interval_s: float = Field(default=5.0, ge=0)


def port_for(settings: MetricsSettings, service: str, instance: str | None) -> int | None:
    """The port this instance serves /metrics on, or None (off, or no port can be derived for it)."""
    if settings.port is not None:
        return settings.port
    if settings.base_port is None:
        return None
    slot = SLOTS.get(service)
    number = int(instance) if instance is not None and instance.isdigit() else (0 if instance is None else -1)
    if slot is None or not 0 <= number < INSTANCES_PER_SLOT:
        log.warning(
            "no metrics port for %s instance %s under KEEL_METRICS_BASE_PORT: set KEEL_METRICS_PORT",
            service,
            instance,
        )
        return None
    return settings.base_port + INSTANCES_PER_SLOT * slot + number


def serve_metrics(service: str, instance: str | None, settings: MetricsSettings | None = None) -> int | None:
    """Start the /metrics server when configured; returns its port. A port that cannot be bound is an
    error: a service told to expose metrics and silently not doing so would look healthy while blind."""
    settings = settings or MetricsSettings()
    port = port_for(settings, service, instance)
    if port is None:
        return None
    metrics()  # every keel_* family registered before the first scrape, even with no sample yet
    server, _ = start_http_server(port, settings.host, REGISTRY)
    bound = int(server.server_port)
    log.info("metrics on http://%s:%d/metrics", settings.host, bound)
    return bound
