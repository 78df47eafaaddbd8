"""Large payloads by reference (claim-check): a 10 MiB run input through the API and a 5 MiB tool result
complete a run while every record on the bus stays under 64 KiB; a blob gone missing fails the step with
a reason that names it, never with a silent null."""

from __future__ import annotations

import json

import httpx
import pytest
from harness import E2E_ENV, kill
from helpers import read_topic, wait_for

from keel.contracts import ToolCommand
from keel.serde import Serde, registry_client
from keel.settings import Settings
from keel.topics import (
    LEDGER,
    RUN_EVENTS,
    RUN_REQUESTS,
    SCHEDULER_STATE,
    STEP_COMMANDS,
    TOOL_COMMANDS,
)
from keel_ops import cli_runs
from keel_ops.stack import service_process, start_background

pytestmark = pytest.mark.e2e
MiB = 1024 * 1024
EVENT_LIMIT = 64 * 1024
CRM_AUTH = {"Authorization": "Bearer sim-crm-token"}
EMAIL_AUTH = {"Authorization": "Bearer sim-email-token"}


@pytest.fixture
def acme(stack: Settings) -> Settings:
    return stack.model_copy(update={"api_url": E2E_ENV["KEEL_API_URL"], "api_key": "acme-dev-key"})


def _records_of(settings: Settings, topic: str, run_id: str) -> list:
    """The raw records of a run on a topic: keyed by the run id (the ledger: by a key naming it)."""
    return [m for m in read_topic(settings, topic) if run_id in (m.key() or b"").decode()]


def test_a_10_mib_input_and_a_5_mib_tool_result_complete_with_small_events(acme, sims, events):
    kind = "k" * (5 * MiB)  # the CRM echoes the kind: its answer is 5 MiB
    note = "n" * (5 * MiB)
    run_input = {"contact": "ada@example.com", "kind": kind, "note": note}
    run_id = cli_runs.submit(acme, "big_payloads", run_input)
    assert events.wait_terminal(run_id, timeout=120) == "completed", [
        (e.event, e.step, e.error) for e in events.of(run_id)
    ]

    # Every record of the run on the bus is small: the payloads travel by reference (the scheduler's
    # changelog too: its state keeps claim checks).
    for topic in (RUN_REQUESTS, RUN_EVENTS, STEP_COMMANDS, TOOL_COMMANDS, LEDGER, SCHEDULER_STATE):
        records = _records_of(acme, topic, run_id)
        assert records, f"no records of {run_id} on {topic}"
        sizes = [len(m.value() or b"") for m in records]
        assert max(sizes) < EVENT_LIMIT, f"{topic}: a record of {max(sizes)} bytes"

    # The refs the events carry name the content: the created event's is the input's.
    created = next(e for e in events.of(run_id) if e.event == "created")
    assert created.input_json is None and created.input_ref and created.input_ref.startswith("sha256:")
    committed = next(e for e in events.of(run_id) if e.event == "step_committed" and e.step == "log")
    assert committed.output_json is None and committed.output_ref

    # Ground truth: the providers' own records hold the whole payloads.
    crm = httpx.get(f"{E2E_ENV['KEEL_CRM_URL']}/v1/activities", headers=CRM_AUTH, timeout=30).json()["data"]
    [activity] = [a for a in crm if (a.get("metadata") or {}).get("keel_run") == run_id]
    assert activity["kind"] == kind and activity["note"] == note
    emails = httpx.get(f"{E2E_ENV['KEEL_EMAIL_URL']}/v1/messages", headers=EMAIL_AUTH, timeout=30).json()
    [email] = [m for m in emails["data"] if (m.get("metadata") or {}).get("keel_run") == run_id]
    assert email["body"] == kind and email["subject"] == activity["activity_id"]
    assert sims.stats("crm")["deliveries"] == 1 and sims.stats("email")["deliveries"] == 1

    # The API shows payloads by reference as claim checks, and resolves a ref of the run for its tenant,
    # and for no other.
    run = cli_runs.api(acme, "GET", f"/v1/runs/{run_id}")
    assert run["input"] == {"$keel_blob": created.input_ref}
    assert cli_runs.api(acme, "GET", f"/v1/runs/{run_id}/blobs/{created.input_ref}") == run_input
    ref = committed.output_ref
    got = cli_runs.api(acme, "GET", f"/v1/runs/{run_id}/blobs/{ref}")
    assert got["kind"] == kind
    globex = acme.model_copy(update={"api_key": "globex-dev-key"})
    with pytest.raises(cli_runs.ApiError, match="404"):
        cli_runs.api(globex, "GET", f"/v1/runs/{run_id}/blobs/{ref}")


def test_a_missing_payload_blob_fails_the_step_with_a_reason_naming_it(acme, stack, sims, events):
    from keel.blobs import store_for

    kill(stack, "adapters")  # the tool command waits on the topic while its blob is taken away
    try:
        run_input = {"contact": "ada@example.com", "kind": "activity", "note": "x" * (200 * 1024)}
        run_id = cli_runs.submit(acme, "big_payloads", run_input)
        serde = Serde(registry_client(stack.schema_registry_url))
        found: list[ToolCommand] = []

        def command_seen() -> bool:
            found[:] = [
                serde.decode(TOOL_COMMANDS, m.value()) for m in _records_of(stack, TOOL_COMMANDS, run_id)
            ]
            return bool(found)

        wait_for(command_seen, 60, f"the tool command of {run_id}")
        ref = json.loads(found[0].payload_json)["$keel_blob"]
        store = store_for(stack)
        assert store.exists("acme", ref)
        store.delete("acme", ref)
    finally:
        start_background(stack, service_process("adapters"))
    assert events.wait_terminal(run_id, timeout=90) == "failed"
    failed = next(e for e in events.of(run_id) if e.event == "tool_failed")
    assert failed.tool.failure_class == "validation"
    assert ref in (failed.error or "") and "missing" in (failed.error or "")
    ended = next(e for e in events.of(run_id) if e.event == "failed")
    assert ref in (ended.error or "")
    assert sims.stats("crm")["deliveries"] == 0  # nothing was sent in its place
