"""What `keel up` starts: the tracer only when an OTLP endpoint is configured (traces off by default)."""

from __future__ import annotations

import pytest

from keel.settings import Settings
from keel_ops.cli import _processes
from keel_ops.stack import SERVICES, Background

ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def started(monkeypatch: pytest.MonkeyPatch, **env: str) -> dict[str, Background]:
    for var in ENDPOINTS:
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    return {p.name: p for p in _processes(Settings())}


def test_without_an_endpoint_the_tracer_is_not_started(monkeypatch):
    procs = started(monkeypatch)
    assert {f"{s}-0" for s in SERVICES} <= set(procs)
    assert "tracer-0" not in procs


@pytest.mark.parametrize("var", ENDPOINTS)
def test_with_an_endpoint_one_supervised_tracer_starts(monkeypatch, var):
    tracer = started(monkeypatch, **{var: "http://127.0.0.1:4318"})["tracer-0"]
    assert tracer.argv[1:3] == ["-m", "keel_ops.supervise"]
    assert tracer.argv[-4:] == ["-m", "services.tracer", "--instance", "0"]
