"""Run the dashboard: `python -m services.dashboard [--topic T] [--group G] [--scope S] [--port P]`.

Consumes keel.run-events (at-least-once, counted once per event id in Postgres) and serves the figures
as JSON: GET /dashboard/runs-by-status?minutes=N, /dashboard/spend?hours=N, /dashboard/failure-classes,
/dashboard/deliveries. Stops on SIGTERM/SIGINT after the batch in hand. See docs/dashboard.md.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from typing import Any

import psycopg
import uvicorn

from keel import db
from keel.schemas import TOPIC_ENVELOPES
from keel.serde import Serde, registry_client
from keel.topics import RUN_EVENTS
from services.dashboard import store
from services.dashboard.config import DashboardSettings
from services.dashboard.consumer import DashboardConsumer
from services.dashboard.web import make_app


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    s = DashboardSettings()
    parser = argparse.ArgumentParser(
        prog="python -m services.dashboard",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--topic",
        action="append",
        help=f"run-event topic to read (repeatable; default {s.dashboard_topic}, KEEL_DASHBOARD_TOPIC)",
    )
    parser.add_argument(
        "--group",
        default=s.dashboard_group,
        help=f"consumer group (default {s.dashboard_group}, KEEL_DASHBOARD_GROUP)",
    )
    parser.add_argument(
        "--scope",
        default=s.dashboard_scope,
        help="name the figures are kept under (default: the group; KEEL_DASHBOARD_SCOPE)",
    )
    parser.add_argument(
        "--host",
        default=s.dashboard_host,
        help=f"HTTP address (default {s.dashboard_host}, KEEL_DASHBOARD_HOST)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=s.dashboard_port,
        help=f"HTTP port (default {s.dashboard_port}, KEEL_DASHBOARD_PORT)",
    )
    parser.add_argument("--no-http", action="store_true", help="consume only; serve nothing")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s dashboard %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    settings = DashboardSettings()
    topics = args.topic or [settings.dashboard_topic]
    scope = args.scope or args.group
    url = db.database_url(settings, start=False)

    def connect() -> psycopg.Connection[Any]:
        return psycopg.connect(url, autocommit=True, connect_timeout=10)

    conn = connect()
    store.ensure_tables(conn)
    # Any topic it is pointed at carries run events: decode it with the run-event envelope.
    serde = Serde(
        registry_client(settings.schema_registry_url), {t: TOPIC_ENVELOPES[RUN_EVENTS] for t in topics}
    )
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    server = None
    if not args.no_http:
        config = uvicorn.Config(make_app(connect, scope), host=args.host, port=args.port, log_level="warning")
        server = uvicorn.Server(config)
        threading.Thread(target=server.run, name="dashboard-http", daemon=True).start()
        logging.info("serving http://%s:%d/dashboard/", args.host, args.port)
    print("STARTED", flush=True)
    try:
        DashboardConsumer(settings, serde, conn, topics, args.group, scope).run(stopped)
    finally:
        if server is not None:
            server.should_exit = True
        conn.close()
    logging.info("stopped")


if __name__ == "__main__":
    main()
