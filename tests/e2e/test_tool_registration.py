"""A tool registered through the API while every service runs: a workflow naming it is applied next, and
a run of it completes with one effect at the provider, without restarting anything."""

from __future__ import annotations

import httpx
import pytest
import yaml
from harness import E2E_ENV
from helpers import unique

from infra.simulators.dedup import effect_id
from keel.schemas import REPO_ROOT
from keel.settings import Settings
from keel_ops import cli_runs

pytestmark = pytest.mark.e2e
URL = E2E_ENV["KEEL_API_URL"]
ADMIN = {"Authorization": "Bearer admin-dev-key"}  # registering definitions is for admins
ACME = {"Authorization": "Bearer acme-dev-key"}
REFUND = yaml.safe_load((REPO_ROOT / "docs" / "examples" / "tools" / "refund.v1.yaml").read_text())

WORKFLOW = """
name: {name}
version: 1
description: One refund through a tool registered at runtime.
input:
  charge_id: string
  amount_cents: integer
steps:
  - name: refund
    kind: tool
    tool: {tool}
    side_effects: true
    input:
      charge_id: "{{{{ input.charge_id }}}}"
      amount_cents: "{{{{ input.amount_cents }}}}"
      reason: requested_by_customer
    retry: {{max_attempts: 4, initial_backoff_ms: 100, max_backoff_ms: 500}}
"""


def test_a_tool_registered_at_runtime_is_called_by_the_running_services(stack, keel, sims, events):
    tool_name = unique("refund").replace("-", "_")
    tool = f"{tool_name}@2"
    acme = stack.model_copy(update={"api_url": URL, "api_key": "acme-dev-key"})
    assert isinstance(acme, Settings)
    # The services are up and have never heard of the tool.
    assert httpx.get(f"{URL}/v1/tools/{tool_name}/versions", headers=ACME).status_code == 404
    workflow = WORKFLOW.format(name=unique("refunds").replace("-", "_"), tool=tool)
    early = httpx.post(f"{URL}/v1/workflows", content=workflow, headers=ADMIN)
    assert early.status_code == 422 and f"unknown tool '{tool}'" in early.text

    definition = REFUND | {"name": tool_name, "version": 2, "description": "Refund, registered at runtime."}
    applied = httpx.post(f"{URL}/v1/tools", content=yaml.safe_dump(definition), headers=ADMIN)
    assert applied.status_code == 201, applied.text
    registered = httpx.post(f"{URL}/v1/workflows", content=workflow, headers=ADMIN)
    assert registered.status_code == 201, registered.text

    run_id = cli_runs.submit(acme, registered.json()["name"], {"charge_id": "ch_9z8y7x", "amount_cents": 700})
    assert events.wait_terminal(run_id, 60) == "completed", events.kinds(run_id)
    log = [e for e in events.of(run_id) if e.step == "refund"]
    # The adapters built the tool from its registered definition: its mode travels with the fact.
    assert {e.tool.idempotency_mode for e in log if e.event == "tool_called"} == {"provider_key"}
    committed = next(e for e in log if e.event == "step_committed")
    assert committed.commit.external_id.startswith("re_")
    payments = sims.stats("payments")  # ground truth: the provider's own records
    assert payments["by_effect"] == {effect_id("acme", run_id, "refund"): 1}, payments
