"""Process logs: today's text lines for people, or one JSON object per line for a log pipeline.

`KEEL_LOG_FORMAT=json` switches every service to JSON lines (docs/observability.md); the default stays
text, which is what people read in a terminal and under the data dir's logs. Either way, each run event
a service publishes is logged once, with its tenant, run, step, attempt and trace id as fields, so a log
pipeline can join logs to the event log and to traces without parsing messages.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from keel.contracts import RunEvent

ENV = "KEEL_LOG_FORMAT"
EVENTS_LOGGER = "keel.events"
# The fields a run's log lines carry (as `extra=`); they become top-level keys of a JSON line.
RUN_FIELDS = ("event", "tenant", "workflow", "run", "step", "call", "attempt", "trace_id", "span_id")
# Attributes every LogRecord has: anything else on a record came from `extra=` and is kept.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
# The run a thread is handling a message of: its lines carry the run's fields (see `run_context`).
_RUN: ContextVar[dict[str, Any] | None] = ContextVar("keel_log_run", default=None)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: ts, level, logger, service, instance, message, the
    record's `extra=` fields, and the exception's text when there is one."""

    def __init__(self, service: str, instance: str | None = None) -> None:
        super().__init__()
        self.service, self.instance = service, instance

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "service": self.service,
            "instance": self.instance,
            "message": record.getMessage(),
        }
        for name, value in vars(record).items():
            if name not in _STANDARD and name not in line:
                line[name] = value
        for name, value in (_RUN.get() or {}).items():
            line.setdefault(name, value)  # a field the call passed itself wins
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        # default=str: an extra field that is not JSON (a datetime, an exception) is written as text,
        # never lost with the line.
        return json.dumps(line, default=str, ensure_ascii=False)


def log_format() -> str:
    value = os.environ.get(ENV, "text").strip().lower()
    if value not in ("text", "json"):
        raise ValueError(f"{ENV} must be text or json, not {value!r}")
    return value


def configure_logging(service: str, instance: str | None = None, level: int = logging.INFO) -> None:
    """Set the root logger of a service process up: text (default) or JSON lines, on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format() == "json":
        handler.setFormatter(JsonFormatter(service, instance))
    else:
        who = f"{service}-{instance}" if instance is not None else service
        handler.setFormatter(logging.Formatter(f"%(asctime)s {who} %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    logging.getLogger("httpx").setLevel(logging.WARNING)


def run_fields(e: RunEvent) -> dict[str, Any]:
    """A run event's identifying fields, as log fields (None when the event has none, e.g. no step)."""
    return {
        "event": e.event,
        "tenant": e.tenant_id,
        "workflow": e.workflow,
        "run": e.run_id,
        "step": e.step,
        "call": e.call,
        "attempt": e.attempt,
        "trace_id": e.trace_id,
        "span_id": e.span_id,
    }


def command_fields(value: object) -> dict[str, Any] | None:
    """The run fields of a consumed record (a command, request or event), or None for one about no run."""
    run = getattr(value, "run_id", None)
    if not isinstance(run, str):
        return None
    return {
        "tenant": getattr(value, "tenant_id", None),
        "run": run,
        "step": getattr(value, "step", None),
        "attempt": getattr(value, "attempt", None),
        "trace_id": getattr(value, "trace_id", None),
    }


@contextmanager
def run_context(value: object) -> Iterator[None]:
    """Lines logged while handling `value` (on this thread) carry its run's fields in JSON."""
    token = _RUN.set(command_fields(value))
    try:
        yield
    finally:
        _RUN.reset(token)


def log_run_event(e: RunEvent, service: str) -> None:
    """One log line for a run event this service published (its transaction committed)."""
    fields = run_fields(e)
    where = f"{e.step}#{e.attempt}" if e.step else "(run)"
    logging.getLogger(EVENTS_LOGGER).info(
        "%s %s run=%s", where, e.event, e.run_id, extra={**fields, "event_id": e.event_id}
    )
