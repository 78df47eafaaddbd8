"""Re-run from a step end to end (docs/rerun.md): reused steps call nothing, an unchanged step keeps the
origin's key and is answered by the ledger, a changed one is sent once under a key of the new run."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from harness import E2E_ENV
from helpers import read_topic, wait_for

from keel.lifecycle import lifecycle_problems
from keel.serde import Serde, registry_client
from keel.settings import Settings
from keel.topics import LEDGER
from keel_ops import cli_runs

pytestmark = pytest.mark.e2e
LEAD = {"lead_email": "ada@example.com", "lead_name": "Ada", "product": "Keel"}
URL = E2E_ENV["KEEL_API_URL"]
SIMS = ("model", "crm", "email")
WRITES = {"log_to_crm", "send_email"}


@pytest.fixture
def acme(stack: Settings) -> Settings:
    return stack.model_copy(update={"api_url": URL, "api_key": "acme-dev-key"})


@pytest.fixture
def globex(stack: Settings) -> Settings:
    return stack.model_copy(update={"api_url": URL, "api_key": "globex-dev-key"})


def counts(sims) -> dict[str, tuple[int, int]]:
    """(requests, deliveries) each simulator has seen: what reached the outside world at all."""
    return {name: (sims.stats(name)["requests"], sims.stats(name)["deliveries"]) for name in SIMS}


def steps_of(settings: Settings, run_id: str) -> dict[str, dict]:
    return {s["step"]: s for s in cli_runs.api(settings, "GET", f"/v1/runs/{run_id}")["steps"]}


def ledger_count(settings: Settings, keys: set[str]) -> dict[str, int]:
    serde = Serde(registry_client(settings.schema_registry_url))
    found = dict.fromkeys(keys, 0)
    for message in read_topic(settings, LEDGER):
        record = serde.decode(LEDGER, message.value())
        if record.idempotency_key in found:
            found[record.idempotency_key] += 1
    return found


def completed_origin(acme: Settings) -> tuple[str, dict[str, dict]]:
    origin = cli_runs.submit(acme, "outbound_email", LEAD)
    assert cli_runs.wait(acme, origin, 60, quiet=True)["status"] == "completed"
    return origin, steps_of(acme, origin)


def rerun(acme: Settings, origin: str, from_step: str, patch: dict | None = None) -> str:
    body: dict = {"from_step": from_step, **({"patch": patch} if patch is not None else {})}
    reply = cli_runs.api(acme, "POST", f"/v1/runs/{origin}/rerun", json=body)
    assert reply["rerun_of"] == origin and reply["from_step"] == from_step
    run = cli_runs.wait(acme, reply["run_id"], 60, quiet=True)
    assert run["status"] == "completed", run
    return str(reply["run_id"])


def test_rerun_from_the_last_step_with_a_patched_input_sends_it_once_and_calls_nothing_before(
    acme, sims, keel, events
):
    origin, before_steps = completed_origin(acme)
    before = counts(sims)
    new = rerun(acme, origin, "send_email", {"lead_email": "grace@example.com"})
    after = counts(sims)

    # draft_email (the model) and log_to_crm (the CRM) were not called at all; the send went out once.
    assert after["model"] == before["model"] and after["crm"] == before["crm"]
    assert after["email"] == (before["email"][0] + 1, before["email"][1] + 1)
    email = sims.stats("email")["by_effect"]
    assert email.get(f"acme|{new}|send_email") == 1 and email.get(f"acme|{origin}|send_email") == 1

    steps = steps_of(acme, new)
    for reused in ("draft_email", "log_to_crm"):
        assert steps[reused]["status"] == "committed" and steps[reused]["attempts"] == []
        assert steps[reused]["output"] == before_steps[reused]["output"]
    send = steps["send_email"]
    assert send["idempotency_key"].split("|")[2] == new  # its input changed: a key of the new run
    assert send["idempotency_key"] != before_steps["send_email"]["idempotency_key"]
    assert ledger_count(acme, {send["idempotency_key"]}) == {send["idempotency_key"]: 1}

    # Both timelines link: the re-run names its origin, the origin lists its re-run.
    assert cli_runs.api(acme, "GET", f"/v1/runs/{new}")["rerun_of"] == origin
    wait_for(
        lambda: new in cli_runs.api(acme, "GET", f"/v1/runs/{origin}")["reruns"],
        30,
        "the origin's view to list its re-run",
    )
    timeline = cli_runs.api(acme, "GET", f"/v1/runs/{new}/events")["events"]
    reused_facts = [e for e in timeline if e["event"] == "step_committed" and e["source"] == "scheduler"]
    assert {e["step"] for e in reused_facts} == {"draft_email", "log_to_crm"}
    assert {e["body"]["commit"]["reused_from"] for e in reused_facts} == {origin}
    assert events.wait_terminal(new) == "completed"
    assert lifecycle_problems(events.of(new), WRITES) == []  # each step committed once, in order


def test_rerun_with_unchanged_inputs_keeps_the_origin_keys_and_the_ledger_answers(
    acme, globex, sims, keel, events
):
    origin, before_steps = completed_origin(acme)
    before = counts(sims)
    with pytest.raises(cli_runs.ApiError, match="404"):  # another tenant's run is not there for it
        cli_runs.api(globex, "POST", f"/v1/runs/{origin}/rerun", json={"from_step": "log_to_crm"})
    with pytest.raises(cli_runs.ApiError, match="422"):
        cli_runs.api(acme, "POST", f"/v1/runs/{origin}/rerun", json={"from_step": "no_such_step"})
    new = rerun(acme, origin, "log_to_crm")
    after = counts(sims)

    # Nothing reached any provider: the model step was reused, the two writes were answered by the ledger.
    assert after == before
    steps = steps_of(acme, new)
    keys = set()
    for step in ("log_to_crm", "send_email"):
        key = steps[step]["idempotency_key"]
        assert key == before_steps[step]["idempotency_key"] and key.split("|")[2] == origin
        assert steps[step]["external_id"] == before_steps[step]["external_id"]
        keys.add(key)
    timeline = cli_runs.api(acme, "GET", f"/v1/runs/{new}/events")["events"]
    answered = [e for e in timeline if e["event"] == "tool_succeeded"]
    assert {e["step"] for e in answered} == {"log_to_crm", "send_email"}
    assert all(e["body"]["tool"]["already_committed"] for e in answered)
    assert ledger_count(acme, keys) == dict.fromkeys(keys, 1)  # one effect per key, the origin's
    assert events.wait_terminal(new) == "completed"
    assert lifecycle_problems(events.of(new), WRITES) == []  # the ledger's answers are not second commits


def keel_cli(monkeypatch, capsys, *argv: str) -> str:
    """Run `keel ARGV` as the acme tenant; its standard output."""
    from keel_ops import cli

    monkeypatch.setenv("KEEL_API_URL", URL)
    monkeypatch.setenv("KEEL_API_KEY", "acme-dev-key")
    capsys.readouterr()
    assert cli.main(list(argv)) == 0, capsys.readouterr().err
    return str(capsys.readouterr().out)


def test_keel_rerun_one_run_with_a_patch_file_and_in_bulk_once_per_key(
    acme, sims, keel, monkeypatch, capsys, tmp_path
):
    since = datetime.now(UTC)
    first, _ = completed_origin(acme)
    second, _ = completed_origin(acme)
    until = datetime.now(UTC)
    patch = tmp_path / "patch.json"
    patch.write_text(json.dumps({"lead_name": "Grace"}))  # only draft_email's prompt uses it
    out = keel_cli(monkeypatch, capsys, "rerun", first, "--from-step", "draft_email", "--patch", str(patch))
    new = out.split(" -> ")[1].split()[0]
    assert cli_runs.wait(acme, new, 60, quiet=True)["status"] == "completed"

    before = counts(sims)
    bulk = [
        "rerun", "--workflow", "outbound_email", "--status", "completed", "--since", since.isoformat(),
        "--until", until.isoformat(), "--from-step", "log_to_crm", "--rate", "5/s",
        "--idempotency-key", "bulk-1",
    ]  # fmt: skip
    out = keel_cli(monkeypatch, capsys, *bulk)
    assert "2 run(s) match" in out and "[2/2]" in out and "done: 2 re-run(s), 0 refused" in out
    made = sorted(line.split(" -> ")[1].split()[0] for line in out.splitlines() if " -> " in line)
    for run_id in made:
        assert cli_runs.wait(acme, run_id, 60, quiet=True)["status"] == "completed"
    assert counts(sims) == before  # unchanged inputs: the ledger answered every write
    again = keel_cli(monkeypatch, capsys, *bulk)  # the same key: the same re-runs, nothing new
    assert sorted(line.split(" -> ")[1].split()[0] for line in again.splitlines() if " -> " in line) == made
