"""Runs a service's processor in the transactional loop: `python -m services.NAME --instance N`."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable

from keel.lease import hold_or_exit
from keel.logjson import configure_logging
from keel.looplife import keep_running
from keel.metricsserver import serve_metrics
from keel.serde import Serde, registry_client
from keel.settings import Settings, get_settings
from keel.txloop import Processor, TransactionalLoop


def run_service(
    name: str,
    topics: list[str],
    make_processor: Callable[[Settings, Serde], Processor],
    description: str,
    argv: list[str] | None = None,
) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m services.{name}", description=description)
    parser.add_argument(
        "--instance",
        default="0",
        help="instance id, stable across restarts (default 0); it names the transactional "
        "id and the static group membership, so a restarted instance fences its "
        "predecessor and takes its partitions back at once. A second live process with "
        "the same id refuses to start",
    )
    args = parser.parse_args(argv)
    serve(name, args.instance, topics, make_processor)


def serve(
    name: str, instance: str, topics: list[str], make_processor: Callable[[Settings, Serde], Processor]
) -> None:
    """Run one instance in the loop until SIGTERM: consumer group `keel-NAME`, transactional id and
    static membership `keel-NAME-INSTANCE`, held under its instance lease."""
    configure_logging(name, instance)  # text, or JSON lines under KEEL_LOG_FORMAT=json
    settings = get_settings()
    serde = Serde(registry_client(settings.schema_registry_url))
    member = f"keel-{name}-{instance}"
    # Refuses to start (exit 78) while another live process runs under this instance id.
    lease = hold_or_exit(settings, member)
    # Bound only once the lease is ours: a refused duplicate never takes the holder's metrics port.
    serve_metrics(name, instance)

    def build() -> TransactionalLoop:
        logging.info("consuming %s", ", ".join(topics))
        return TransactionalLoop(
            settings,
            serde,
            make_processor(settings, serde),
            group_id=f"keel-{name}",
            topics=topics,
            transactional_id=member,
            instance_id=member,
            service=name,
        )

    loop = keep_running(build)  # returns on SIGTERM/SIGINT, after the batch in hand
    lease.release()  # a restart under this id, from any host, takes it at once
    logging.info("stopped after %d committed batches", loop.committed_batches)
