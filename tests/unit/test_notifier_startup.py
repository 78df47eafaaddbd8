"""A malformed webhook configuration stops the notifier at start-up, naming what is wrong (before it
connects to anything), with EX_CONFIG (78), which keel_ops.supervise does not restart."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"KEEL_WEBHOOKS": '{"acme": {"url": "https://x"}}'}, "KEEL_WEBHOOKS: tenant 'acme': secret must be"),
        ({"KEEL_WEBHOOKS": "acme=https://x"}, "KEEL_WEBHOOKS: not JSON"),
        ({"KEEL_WEBHOOKS_FILE": "/nonexistent/hooks.json"}, "KEEL_WEBHOOKS_FILE /nonexistent/hooks.json"),
        ({"KEEL_PUBLIC_URL": "keel.example.com"}, "KEEL_PUBLIC_URL must be an http(s) URL"),
        ({"KEEL_WEBHOOK_MAX_ATTEMPTS": "0"}, "webhook_max_attempts"),
    ],
)
def test_malformed_configuration_stops_the_start(env: dict[str, str], says: str) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_WEBHOOK", "KEEL_PUBLIC"))}
    # An unreachable broker: had the configuration passed, the process would try to connect instead.
    clean.update(env, KEEL_KAFKA_BOOTSTRAP="127.0.0.1:1")
    done = subprocess.run(
        [sys.executable, "-m", "services.notifier"], env=clean, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 78, done.stderr  # EX_CONFIG: the supervisor does not restart it
    assert says in done.stderr
