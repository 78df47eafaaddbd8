"""The API's /metrics: the process's keel_* metrics and the open quarantine cases from the projection.

Open cases are read from the projection when scraped, not counted from facts by the scheduler: a
count kept in a process restarts at zero with it (and would go negative as cases resolve), while the
projection is the durable, rebuildable answer, whichever scheduler instance holds the run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from psycopg import sql

from keel import vocab
from keel.metrics import metrics
from services.api.deps import Deps
from services.api.pool import EVERY_TENANT

log = logging.getLogger(__name__)


class OpenCases(Collector):
    """keel_quarantine_cases_open{tenant}: quarantine cases the projection shows open (undecided)."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def describe(self) -> list[Any]:
        return [self._family({})]

    def collect(self) -> Iterator[Any]:
        query = sql.SQL(
            "SELECT tenant_id, count(*) AS n FROM {} WHERE status = 'open' AND kind = %s GROUP BY tenant_id"
        )
        table = sql.Identifier(self.deps.api.projection_schema, "cases")
        try:
            with self.deps.pool.connection(EVERY_TENANT) as conn:
                rows = conn.execute(query.format(table), (vocab.CASE_QUARANTINE,)).fetchall()
        except Exception as exc:  # a scrape must answer: the gauge is left out, the failure logged
            log.warning("open quarantine cases not read: %s", exc)
            return
        yield self._family({r["tenant_id"]: r["n"] for r in rows})

    @staticmethod
    def _family(counts: dict[str, int]) -> GaugeMetricFamily:
        family = GaugeMetricFamily(
            "keel_quarantine_cases_open",
            "Open quarantine cases, by tenant (read from the cases projection when scraped)",
            labels=["tenant"],
        )
        for tenant, n in sorted(counts.items()):
            family.add_metric([tenant], n)
        return family


def install(app: FastAPI, deps: Deps) -> None:
    """GET /metrics, unauthenticated like /healthz: scrapers hold no API key (keep it on an internal
    network, docs/observability.md)."""
    own = CollectorRegistry(auto_describe=True)
    own.register(OpenCases(deps))
    metrics()  # the process-wide keel_* families, registered before the first scrape

    @app.get("/metrics", include_in_schema=False)
    def scrape() -> Response:
        return Response(generate_latest(REGISTRY) + generate_latest(own), media_type=CONTENT_TYPE_LATEST)
