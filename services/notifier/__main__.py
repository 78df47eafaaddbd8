"""Run the notifier: `python -m services.notifier [--instance N]` (configuration: docs/notifications.md)."""

from __future__ import annotations

import argparse
import logging
import sys

from pydantic import ValidationError

from keel.looplife import keep_running
from keel.metricsserver import serve_metrics
from services.notifier.config import ConfigError, NotifierSettings
from services.notifier.service import Notifier

EX_CONFIG = 78


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.notifier", description=__doc__)
    parser.add_argument(
        "--instance", default="0", help="instance id: its static group membership (default 0)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s notifier-{args.instance} %(levelname)s %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:  # a malformed configuration stops the start, saying what is wrong
        settings = NotifierSettings()
        endpoints = settings.endpoints()
        settings.checked_public_url()
    except (ConfigError, ValidationError) as exc:
        print(f"keel notifier: {exc}", file=sys.stderr)
        return EX_CONFIG  # keel_ops.supervise does not restart it: no restart can fix the configuration
    logging.info("webhooks for tenants: %s", ", ".join(sorted(endpoints)) or "none (log lines only)")
    serve_metrics("notifier", args.instance)  # /metrics when configured (docs/observability.md)
    group = settings.notifier_group
    keep_running(lambda: Notifier(settings, group_id=group, instance_id=f"{group}-{args.instance}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
