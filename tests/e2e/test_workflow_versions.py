"""A workflow version applied while runs of the previous one are in flight: those runs finish on the
version they started with (same payloads, same idempotency keys); new runs use the new version."""

from __future__ import annotations

import httpx
import pytest
from harness import E2E_ENV
from helpers import unique, wait_for

from keel.idempotency import idempotency_key
from keel.settings import Settings
from keel_ops import cli_runs

pytestmark = pytest.mark.e2e
URL = E2E_ENV["KEEL_API_URL"]
ADMIN = {"Authorization": "Bearer admin-dev-key"}  # registering definitions is for admins

DEFINITION = """
name: {name}
version: {version}
description: Pinning test, version {version}.
input:
  to: string
steps:
  - name: note
    kind: tool
    tool: crm@1
    side_effects: true
    input:
      contact_email: "{{{{ input.to }}}}"
      kind: note
      note: pinning test
    retry: {{max_attempts: 6, initial_backoff_ms: 100, max_backoff_ms: 500}}
  - name: send
    kind: tool
    tool: email@1
    needs: [note]
    side_effects: true
    input:
      to: "{{{{ input.to }}}}"
      subject: Subject of version {version}
      body: Written by version {version}.
"""


def send_payload(to: str, version: int) -> dict:
    return {"to": to, "subject": f"Subject of version {version}", "body": f"Written by version {version}."}


@pytest.fixture
def acme(stack: Settings) -> Settings:
    return stack.model_copy(update={"api_url": URL, "api_key": "acme-dev-key"})


def apply(name: str, version: int) -> dict:
    reply = httpx.post(
        f"{URL}/v1/workflows", content=DEFINITION.format(name=name, version=version), headers=ADMIN
    )
    assert reply.status_code == 201, reply.text
    return reply.json()


def test_runs_in_flight_finish_on_their_version_and_new_runs_use_the_new_one(acme, sims, events):
    name = unique("pinned").replace("-", "_")
    apply(name, 1)
    # Hold every v1 run in flight: its first step is rate limited once and waits out Retry-After.
    sims.fault("crm", kind="rate_limit", retry_after=3, times=3)
    old = {cli_runs.submit(acme, name, {"to": f"{i}@example.com"}): f"{i}@example.com" for i in range(3)}
    for run_id in old:
        wait_for(
            lambda r=run_id: "retry_scheduled" in events.kinds(r), 30, f"run {run_id} to wait for a retry"
        )
    apply(name, 2)
    assert all("completed" not in events.kinds(r) for r in old)  # v2 is registered while they are in flight
    new = cli_runs.submit(acme, name, {"to": "new@example.com"})

    for run_id, to in {**old, new: "new@example.com"}.items():
        assert events.wait_terminal(run_id, 90) == "completed", events.kinds(run_id)
        version = 2 if run_id == new else 1
        assert {e.workflow_version for e in events.of(run_id)} == {version}
        sends = [e for e in events.of(run_id) if e.step == "send" and e.idempotency_key]
        expected = idempotency_key("acme", name, run_id, "send", send_payload(to, version))
        assert sends and {e.idempotency_key for e in sends} == {expected}
        assert sims.stats("email")["by_key"].get(expected) == 1  # the provider saw this run's v-payload once
