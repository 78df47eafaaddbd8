"""JSON log lines: one object per line, with a run event's tenant, run, step, attempt and trace id."""

from __future__ import annotations

import io
import json
import logging
from datetime import UTC, datetime

import pytest

from keel.contracts import RunEvent
from keel.logjson import (
    EVENTS_LOGGER,
    JsonFormatter,
    configure_logging,
    log_format,
    log_run_event,
    run_context,
)


def capture(formatter: logging.Formatter, logger_name: str) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    logger = logging.getLogger(logger_name)
    logger.handlers, logger.propagate = [handler], False
    logger.setLevel(logging.INFO)
    return logger, out


def event(**fields: object) -> RunEvent:
    base: dict[str, object] = {
        "event_id": "e1",
        "run_id": "run-1",
        "tenant_id": "acme",
        "workflow": "outbound_email",
        "step": "send_email",
        "attempt": 2,
        "event": "tool_called",
        "ts": datetime(2026, 1, 1, tzinfo=UTC),
        "trace_id": "0af7651916cd43dd8448eb211c80319c",
        "span_id": "b7ad6b7169203331",
    }
    return RunEvent(**{**base, **fields})  # type: ignore[arg-type]


def test_a_run_event_is_one_json_line_with_its_run_fields():
    logger, out = capture(JsonFormatter("adapters", "0"), EVENTS_LOGGER)
    try:
        log_run_event(event(), "adapters")
        log_run_event(event(step=None, attempt=0, event="created", trace_id=None), "scheduler")
    finally:
        logger.handlers, logger.propagate = [], True
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["tenant"] == "acme" and first["run"] == "run-1"
    assert first["step"] == "send_email" and first["attempt"] == 2
    assert first["trace_id"] == "0af7651916cd43dd8448eb211c80319c" and first["span_id"] == "b7ad6b7169203331"
    assert first["event"] == "tool_called" and first["workflow"] == "outbound_email"
    assert first["service"] == "adapters" and first["instance"] == "0" and first["level"] == "info"
    assert first["logger"] == EVENTS_LOGGER and "tool_called" in first["message"]
    datetime.fromisoformat(first["ts"])
    # A run-level event: the same keys, null where the event has no value
    assert second["step"] is None and second["attempt"] == 0 and second["trace_id"] is None


def test_other_lines_keep_their_extras_exceptions_and_non_json_values():
    logger, out = capture(JsonFormatter("ledger"), "keel.test.json")
    try:
        try:
            raise ValueError("boom\nwith a newline")
        except ValueError:
            logger.exception("processing %s failed", "t:0:1", extra={"at": datetime(2026, 1, 1, tzinfo=UTC)})
        logger.warning('quotes " and unicode é')
    finally:
        logger.handlers, logger.propagate = [], True
    lines = out.getvalue().splitlines()
    assert len(lines) == 2  # a traceback's newlines stay inside its line
    failed, warned = (json.loads(line) for line in lines)
    assert failed["message"] == "processing t:0:1 failed" and failed["level"] == "error"
    assert "ValueError: boom" in failed["exc"] and failed["at"].startswith("2026-01-01")
    assert "tenant" not in failed  # a line about no run carries no run fields
    assert warned["message"] == 'quotes " and unicode é' and warned["instance"] is None


def test_the_format_comes_from_the_environment(monkeypatch):
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        monkeypatch.delenv("KEEL_LOG_FORMAT", raising=False)
        assert log_format() == "text"
        configure_logging("ledger", "0")
        assert not isinstance(root.handlers[0].formatter, JsonFormatter)
        monkeypatch.setenv("KEEL_LOG_FORMAT", "JSON")
        configure_logging("ledger", "0")
        assert isinstance(root.handlers[0].formatter, JsonFormatter)
        monkeypatch.setenv("KEEL_LOG_FORMAT", "yaml")
        with pytest.raises(ValueError, match="text or json"):
            configure_logging("ledger", "0")
    finally:
        root.handlers = saved[0]
        root.setLevel(saved[1])


def test_lines_logged_while_handling_a_command_carry_its_run():
    logger, out = capture(JsonFormatter("executor", "0"), "keel.test.context")
    command = event(event="step_started")  # any record with run_id, tenant_id, step, attempt, trace_id
    try:
        with run_context(command):
            logger.warning("model answer unusable")
            logger.warning("explicit", extra={"run": "other-run"})
        logger.warning("after")
        with run_context(object()):  # a record about no run
            logger.warning("no run")
    finally:
        logger.handlers, logger.propagate = [], True
    inside, explicit, after, none = (json.loads(line) for line in out.getvalue().splitlines())
    assert (inside["tenant"], inside["run"]) == ("acme", "run-1")
    assert (inside["step"], inside["attempt"]) == ("send_email", 2)
    assert inside["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert explicit["run"] == "other-run"  # the call's own field wins
    assert "run" not in after and "run" not in none
