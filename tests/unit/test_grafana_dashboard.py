"""The Grafana dashboard (infra/grafana/keel.json): valid JSON whose queries name only metrics that exist."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import CollectorRegistry

from keel.metrics import Metrics
from services.api.metrics import OpenCases

DASHBOARD = Path(__file__).parents[2] / "infra" / "grafana" / "keel.json"
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def registered_series() -> set[str]:
    """Every series name the code exposes: the families of a process and the API's own gauge."""
    registry = CollectorRegistry()
    Metrics(registry)
    families = [*registry.collect(), OpenCases._family({})]
    return {f.name + suffix for f in families for suffix in _SUFFIXES[f.type]}


def queried_series(dashboard: dict) -> dict[str, set[str]]:
    """Series names each panel's queries use, by panel title."""
    return {
        panel["title"]: {name for t in panel["targets"] for name in re.findall(r"\bkeel_[a-z_]+", t["expr"])}
        for panel in dashboard["panels"]
    }


def test_the_dashboard_is_valid_json_with_a_query_in_every_panel():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        assert {"x", "y", "w", "h"} <= panel["gridPos"].keys()
        assert all(t["expr"] and t["refId"] for t in panel["targets"])


def test_every_metric_the_dashboard_queries_is_one_the_code_registers():
    known = registered_series()
    queried = queried_series(json.loads(DASHBOARD.read_text()))
    unknown = {title: names - known for title, names in queried.items()}
    assert not {t: n for t, n in unknown.items() if n}, unknown


def test_every_metric_the_code_registers_has_a_panel():
    used = set().union(*queried_series(json.loads(DASHBOARD.read_text())).values())
    families = {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in used}
    exposed = {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in registered_series()}
    assert exposed - families == set()
