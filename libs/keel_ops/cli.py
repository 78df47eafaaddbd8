"""`keel`: run the local stack and operate Keel from the command line."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from functools import partial

from confluent_kafka.admin import AdminClient

from keel import db, vocab
from keel.metricsserver import DEFAULT_BASE_PORT
from keel.producer import client_config
from keel.serde import Serde, register_contracts, register_worker_topics, registry_client
from keel.settings import Settings
from keel.tooldefs import ToolRegistry
from keel.topics import catalogue, ensure_topics, worker_commands, worker_topics
from keel_ops import (
    cli_acl,
    cli_audit,
    cli_cases,
    cli_costs,
    cli_credentials,
    cli_replay,
    cli_rerun,
    cli_runs,
    cli_tools,
    cli_workflows,
    workers,
)
from keel_ops.stack import (
    SERVICES,
    Background,
    api_process,
    apply_acl_table,
    kafka,
    local_operator,
    registry_process,
    running_pid,
    say,
    service_process,
    simulator_processes,
    start_background,
    stop_background,
    supervised,
)

Args = argparse.Namespace


def _processes(settings: Settings) -> list[Background]:
    """Everything `keel up` starts after the broker and database, in start order; the services run
    under keel_ops.supervise, which restarts them if they die. The tracer runs only when an OTLP endpoint
    is configured (OTEL_EXPORTER_OTLP_ENDPOINT): traces are off by default."""
    from services.tracer.export import endpoint_configured  # OpenTelemetry loads only for `keel up`

    names = [*SERVICES, *(["tracer"] if endpoint_configured() else [])]
    services = [supervised(service_process(s)) for s in names]
    return [registry_process(settings), *simulator_processes(), *services, api_process(settings.api_url)]


def cmd_up(settings: Settings, _: Args) -> int:
    t0 = time.monotonic()
    # The local stack serves /metrics: every service instance on its own port (docs/observability.md).
    os.environ.setdefault("KEEL_METRICS_BASE_PORT", str(DEFAULT_BASE_PORT))
    os.environ.setdefault("KEEL_ENV", "dev")  # a loopback dev stack: the API takes the development keys
    say(f"starting Kafka on {settings.kafka_bootstrap}")
    kafka(settings, "start")
    settings = local_operator(settings)  # the admin door; the services connect as their own principals
    created = ensure_topics(
        AdminClient(client_config(settings)),
        catalogue(settings),
        settings.topic_replication,
    )
    if created:
        say(f"created topics {', '.join(sorted(created))}")
    added, removed = apply_acl_table(settings)
    say(f"broker users and ACLs applied (keel acl): {added} ACLs added, {removed} removed")
    say("starting PostgreSQL" + ("" if settings.db_url() else " (embedded)"))
    cmd_migrate(settings, _)
    for proc in _processes(settings):
        say(f"starting {proc.name}")
        start_background(settings, proc)
        if proc.name == "registry":
            cmd_register(settings, _)
            cli_tools.apply_local_files(settings)  # the local default: every tool file, registered
            cli_workflows.apply_local_files(settings)  # the local default: every workflow file, registered
    logs = settings.data_dir / "logs"
    say(f"up in {time.monotonic() - t0:.1f}s: API on {settings.api_url}; logs under {logs}")
    say(f"metrics: {settings.api_url}/metrics and ports from {os.environ['KEEL_METRICS_BASE_PORT']} up")
    say(f"operator console: {settings.api_url}/console (docs/console.md)")
    return 0


def cmd_down(settings: Settings, _: Args) -> int:
    for proc in reversed(_processes(settings)):
        if stop_background(settings, proc.name):
            say(f"stopped {proc.name}")
    kafka(settings, "stop")
    if not settings.db_url() and db.stop_embedded(settings):
        say("stopped the embedded PostgreSQL")
    return 0


def cmd_status(settings: Settings, _: Args) -> int:
    up = kafka_up = kafka(settings, "status", check=False) == 0
    for proc in _processes(settings):
        pid = running_pid(settings, proc.name)
        up = up and pid is not None
        print(f"{proc.name:<12} {f'running (pid {pid})' if pid else 'stopped'}")
    if settings.db_url():
        print("postgres     external (DATABASE_URL)")
    else:
        print(f"postgres     {'running (embedded)' if db.embedded_running(settings) else 'stopped'}")
    if kafka_up:  # what waits for tool workers (keel-worker): per worker group, commands and members
        for backlog in workers.backlogs(settings, ToolRegistry.configured()):
            print(f"worker       {backlog.line()}")
    return 0 if up else 3


def _worker_groups() -> list[str]:
    tools = ToolRegistry.configured()
    return [w for w in (tools.get(t).worker for t in tools.names()) if w is not None]


def cmd_register(settings: Settings, _: Args) -> int:
    client = registry_client(settings.schema_registry_url)
    ids = register_contracts(client)
    ids.update(register_worker_topics(client, [worker_commands(g) for g in _worker_groups()]))
    for subject, sid in sorted(ids.items()):
        say(f"schema {subject} -> id {sid}")
    return 0


def cmd_topics(settings: Settings, _: Args) -> int:
    created = ensure_topics(
        AdminClient(client_config(settings)),
        catalogue(settings) + worker_topics(settings, _worker_groups()),
        settings.topic_replication,
    )
    say(f"created {', '.join(sorted(created)) or 'nothing (all topics exist)'}")
    return 0


def cmd_migrate(settings: Settings, _: Args) -> int:
    with db.connect(settings) as conn:
        applied = db.migrate(conn)
    say(f"database migrations applied: {applied or 'none pending'}")
    return 0


def cmd_submit(settings: Settings, args: Args) -> int:
    run_id = cli_runs.submit(
        settings,
        args.workflow,
        cli_runs.load_input(args.input, args.input_file),
        args.run_id,
        args.idempotency_key,
        args.budget_usd,
    )
    print(run_id)
    if args.wait:
        run = cli_runs.wait(settings, run_id)
        print(cli_runs.timeline(settings, run_id))
        return 0 if run["status"] == vocab.COMPLETED else 1
    return 0


def cmd_runs(settings: Settings, args: Args) -> int:
    cli_runs.print_runs(settings, args.status, args.workflow, args.limit)
    return 0


def cmd_timeline(settings: Settings, args: Args) -> int:
    print(cli_runs.timeline(settings, args.run_id))
    return 0


def cmd_workflows(settings: Settings, args: Args) -> int:
    return cli_workflows.run(settings, args.action, args.name, args.version)


def cmd_dlq(settings: Settings, args: Args) -> int:
    import json

    from keel import dlq

    entries = dlq.entries(settings)
    if args.action == "list":
        shown = entries if args.all else dlq.waiting(entries)
        for e in shown:
            s = e.summary()
            mark = "redriven" if s["redriven"] else "waiting"
            print(f"{s['dead_letter_id']:<40} {mark:<9} {s['error_class']:<18} {s['reason'][:70]}")
        print(f"{len(shown)} dead letter(s){'' if args.all else ' waiting (--all shows redriven ones too)'}")
        return 0
    if args.action == "redrive" and (args.id == "--all" or args.all):
        todo = dlq.waiting(entries)
    else:
        found = dlq.find(entries, args.id or "")
        if found is None:
            raise ValueError(
                f"no dead letter {args.id!r}" if args.id else f"keel dlq {args.action} needs an ID"
            )
        if args.action == "show":
            print(json.dumps(found.detail(), indent=2))
            return 0
        todo = [found]
    serde = Serde(registry_client(settings.schema_registry_url))
    for e in todo:
        status = dlq.redrive(settings, e.letter, cli_workflows.cli_actor(), replaces=e.status, serde=serde)
        say(f"redrove {e.letter.dead_letter_id} -> {status['to']}")
    say(f"{len(todo)} dead letter(s) redriven")
    return 0


def cmd_projections(settings: Settings, args: Args) -> int:
    from services.projector.rebuild import rebuild

    t0 = time.monotonic()
    say("rebuilding the projections from keel.run-events and keel.control (into a fresh schema, swapped in)")
    until = rebuild(settings)
    say(f"rebuilt up to {sum(until.values())} messages in {time.monotonic() - t0:.1f}s")
    return 0


def cmd_demo(settings: Settings, args: Args) -> int:
    from keel_ops.demo import run_demo
    from keel_ops.demo_agent import run_agent_demo

    cmd_up(settings, args)
    return run_agent_demo(settings) if args.which == "agent" else run_demo(settings)


COMMANDS: dict[str, tuple[Callable[[Settings, Args], int], str]] = {
    "up": (
        cmd_up,
        "start the whole local stack in the background (broker, database, registry, "
        "simulators, services, API)",
    ),
    "down": (cmd_down, "stop everything `keel up` started"),
    "status": (cmd_status, "show what runs (exit 0 when the whole stack is up, 3 otherwise)"),
    "demo": (
        cmd_demo,
        "start the stack and run outbound_email with an accept-then-timeout on the send "
        "(`keel demo agent`: the support_triage agent with a fault on the refund provider)",
    ),
    "submit": (cmd_submit, "submit a run through the API and print its run id"),
    "runs": (cmd_runs, "list your tenant's runs, newest first"),
    "timeline": (cmd_timeline, "print a run's ordered timeline of events"),
    "record": (cli_replay.cmd_record, cli_replay.RECORD_HELP),
    "replay": (cli_replay.cmd_replay, cli_replay.REPLAY_HELP),
    "rerun": (cli_rerun.run, cli_rerun.HELP),
    "costs": (cli_costs.run, cli_costs.HELP),
    "audit": (cli_audit.run, cli_audit.HELP),
    "quarantine": (cli_cases.run_quarantine, cli_cases.QUARANTINE_HELP),
    "approvals": (cli_cases.run_approvals, cli_cases.APPROVALS_HELP),
    "cancel": (partial(cli_cases.run_control, "cancel"), cli_cases.CONTROL_HELP["cancel"]),
    "pause": (partial(cli_cases.run_control, "pause"), cli_cases.CONTROL_HELP["pause"]),
    "resume": (partial(cli_cases.run_control, "resume"), cli_cases.CONTROL_HELP["resume"]),
    "workflows": (cmd_workflows, cli_workflows.HELP),
    "tools": (cli_tools.cmd_tools, cli_tools.HELP),
    "projections": (cmd_projections, "projections rebuild: rebuild the Postgres tables from the topics"),
    "dlq": (cmd_dlq, "dead letters: list (waiting ones; --all for every one), show ID, redrive ID|--all"),
    "schemas": (cmd_register, "register the contracts in schemas/ with the registry (on purpose)"),
    "topics": (cmd_topics, "create the topic catalogue (idempotent; checks partition counts)"),
    "migrate": (cmd_migrate, "apply pending database migrations (idempotent)"),
    "credentials": (cli_credentials.run, cli_credentials.HELP),
    "acl": (cli_acl.run, cli_acl.HELP),
}


def _arguments(name: str, p: argparse.ArgumentParser) -> None:
    if name == "submit":
        p.add_argument("workflow", help="workflow name, e.g. outbound_email")
        p.add_argument("--input", help="the run input as a JSON object (default {})")
        p.add_argument("--input-file", help="read the run input from this JSON file (- for stdin)")
        p.add_argument("--run-id", help="choose the run id (a repeated run id is never a second run)")
        p.add_argument("--idempotency-key", help="sent as Idempotency-Key: repeating it returns the same run")
        p.add_argument(
            "--budget-usd",
            type=float,
            help="the run's hard spend limit in USD (lowers the workflow's budget_usd, never raises it)",
        )
        p.add_argument("--wait", action="store_true", help="wait for the run to end and print its timeline")
    elif name == "runs":
        p.add_argument("--status", help="only runs in this status")
        p.add_argument("--workflow", help="only runs of this workflow")
        p.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")
    elif name == "timeline":
        p.add_argument("run_id", help="the run")
    elif name == "demo":
        p.add_argument(
            "which",
            nargs="?",
            choices=["email", "agent"],
            default="email",
            help="email (default): outbound_email, one email however the network fails; agent: "
            "support_triage, an agent whose refund provider fails after refunding",
        )
    elif name == "projections":
        p.add_argument("action", choices=["rebuild"])
    elif name == "dlq":
        p.add_argument("action", choices=["list", "show", "redrive"])
        p.add_argument("id", nargs="?", help="dead letter id (topic:partition:offset)")
        p.add_argument(
            "--all", action="store_true", help="list: include redriven ones; redrive: every waiting one"
        )
    elif name == "rerun":
        cli_rerun.arguments(p)
    elif name == "tools":
        cli_tools.arguments(p)
    elif name == "record":
        cli_replay.record_arguments(p)
    elif name == "replay":
        cli_replay.replay_arguments(p)
    elif name == "credentials":
        cli_credentials.arguments(p)
    elif name == "acl":
        cli_acl.arguments(p)
    elif name == "costs":
        cli_costs.arguments(p)
    elif name == "audit":
        cli_audit.arguments(p)
    elif name == "quarantine":
        cli_cases.quarantine_arguments(p)
    elif name == "approvals":
        cli_cases.approvals_arguments(p)
    elif name in cli_cases.CONTROL_HELP:
        cli_cases.control_arguments(p)
    elif name == "workflows":
        p.add_argument("action", nargs="?", choices=["list", "versions", "graph", "apply"], default="list")
        p.add_argument(
            "name", nargs="?", help="versions/graph: the workflow NAME; apply: the YAML or JSON FILE"
        )
        p.add_argument("--version", type=int, help="workflow version (default: newest)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="keel",
        description="Keel: operate LLM agents. Configuration comes from KEEL_* environment "
        "variables (KEEL_KAFKA_BOOTSTRAP, KEEL_SCHEMA_REGISTRY_URL, KEEL_DATA_DIR, DATABASE_URL, "
        "KEEL_API_URL, KEEL_API_KEY, ...).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        _arguments(name, sub.add_parser(name, help=help_text, description=help_text))
    args = parser.parse_args(argv)
    try:
        # Settings read now, not the process-wide cached ones: the environment may have changed since.
        # Against the local broker, through its loopback admin door (keel_ops.stack.local_operator).
        return COMMANDS[args.command][0](local_operator(Settings()), args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        print(f"keel {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
