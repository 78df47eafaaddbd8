"""Run the projector: `python -m services.projector [--instance N] [--schema S] [--topic T] [--rebuild]`."""

from __future__ import annotations

import argparse
import logging

from keel.logjson import configure_logging
from keel.looplife import keep_running
from keel.metricsserver import serve_metrics
from keel.settings import get_settings
from services.projector.rebuild import rebuild
from services.projector.schema import DEFAULT_SCHEMA
from services.projector.service import GROUP, TOPICS, Projector


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m services.projector", description=__doc__)
    parser.add_argument("--instance", type=int, help="instance number: a static group member id")
    parser.add_argument(
        "--schema", default=DEFAULT_SCHEMA, help=f"Postgres schema (default {DEFAULT_SCHEMA})"
    )
    parser.add_argument(
        "--topic", action="append", help=f"topic to project (repeatable; default {' '.join(TOPICS)})"
    )
    parser.add_argument("--group", default=GROUP, help=f"consumer group (default {GROUP})")
    parser.add_argument(
        "--rebuild", action="store_true", help="rebuild the schema from the topics, swap it in, exit"
    )
    args = parser.parse_args()
    number = None if args.instance is None else str(args.instance)
    configure_logging("projector", number)  # text, or JSON lines under KEEL_LOG_FORMAT=json
    settings, topics = get_settings(), args.topic or list(TOPICS)
    if args.rebuild:
        ends = rebuild(settings, topics, args.schema)
        logging.info(
            "schema %s rebuilt up to %s", args.schema, {f"{t}[{p}]": o for (t, p), o in ends.items()}
        )
        return
    instance = f"{args.group}-{args.instance}" if args.instance is not None else None
    serve_metrics("projector", number)
    announced: list[bool] = []

    def build() -> Projector:
        projector = Projector(
            settings, topics=topics, schema=args.schema, group_id=args.group, instance_id=instance
        )
        if not announced:  # the schema exists now: tests and supervisors may look at it
            print("STARTED", flush=True)
            announced.append(True)
        return projector

    keep_running(build)  # returns on SIGTERM/SIGINT; rebuilds after a fatal consumer error


if __name__ == "__main__":
    main()
