"""Run the tracer: `python -m services.tracer [--instance N]` (docs/observability.md, Traces).

Off by default: without OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) it refuses to
start, exit status 78, and the supervisor does not restart it.
"""

from __future__ import annotations

import argparse
import logging
import sys

from pydantic import ValidationError

from keel.logjson import configure_logging
from keel.looplife import keep_running
from keel.topics import RUN_EVENTS
from services.tracer.config import TracerSettings
from services.tracer.export import endpoint_configured, otlp_exporter
from services.tracer.service import Tracer

EX_CONFIG = 78


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.tracer", description=__doc__)
    parser.add_argument(
        "--instance", default="0", help="instance id: its static group membership (default 0)"
    )
    parser.add_argument("--topic", default=RUN_EVENTS, help=f"run-event topic to read (default {RUN_EVENTS})")
    args = parser.parse_args(argv)
    configure_logging("tracer", args.instance)  # text, or JSON lines under KEEL_LOG_FORMAT=json
    endpoint = endpoint_configured()
    if endpoint is None:
        print(
            "keel tracer: set OTEL_EXPORTER_OTLP_ENDPOINT (e.g. http://127.0.0.1:4318) to export traces",
            file=sys.stderr,
        )
        return EX_CONFIG
    try:
        settings = TracerSettings()
    except ValidationError as exc:
        print(f"keel tracer: {exc}", file=sys.stderr)
        return EX_CONFIG
    logging.info("exporting traces to %s", endpoint)
    group = settings.tracer_group
    exporter = otlp_exporter()
    try:
        keep_running(
            lambda: Tracer(
                settings, exporter, topic=args.topic, group_id=group, instance_id=f"{group}-{args.instance}"
            )
        )
    finally:
        exporter.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
