"""Claim checks: large payloads leave records for the blob store; readers get them back whole."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from keel.blobs import BlobMissing, BlobStore
from keel.claimcheck import (
    MARKER_KEY,
    marker_text,
    offload,
    ref_of_marker_text,
    resolved_command,
    resolved_json,
)
from keel.contracts import DeadLetter, LedgerRecord, RunEvent, RunRequested, StepCommand, ToolCommand
from keel.events import inline

T = datetime(2026, 1, 1, tzinfo=UTC)
BIG = {"note": "n" * 5000}
SMALL = {"note": "hi"}
LIMIT = 1024


@pytest.fixture
def store(tmp_path) -> BlobStore:
    return BlobStore(str(tmp_path))


def event(value: object) -> RunEvent:
    text, ref = inline(value)
    return RunEvent(
        event_id="e", run_id="r", tenant_id="acme", workflow="w", event="tool_succeeded", ts=T,
        output_json=text, output_ref=ref, input_json=text, input_ref=ref,
    )  # fmt: skip


def tool_command(value: object) -> ToolCommand:
    return ToolCommand(
        command_id="c", run_id="r", tenant_id="acme", workflow="w", workflow_version=1, step="s",
        attempt=1, tool="email@1", payload_json=inline(value)[0], idempotency_key="k", issued_at=T,
    )  # fmt: skip


def test_a_large_event_payload_travels_as_its_content_ref_alone(store):
    big = event(BIG)
    small = offload(big, store, LIMIT)
    assert small.output_json is None and small.input_json is None
    assert small.output_ref == big.output_ref  # the address events always carried is the blob's name
    assert resolved_json(store, "acme", small.output_json, small.output_ref) == big.output_json
    assert offload(event(SMALL), store, LIMIT) == event(SMALL)  # below the threshold: untouched
    assert list(store.listing()) != []


def test_a_non_canonical_json_text_is_stored_under_its_content_ref(store):
    text = json.dumps(BIG, indent=2)  # not canonical: its bytes do not hash to the content ref
    req = RunRequested(
        request_id="q", run_id="r", tenant_id="acme", workflow="w", requested_at=T,
        input_json=text, input_ref=inline(BIG)[1],
    )  # fmt: skip
    out = offload(req, store, LIMIT)
    assert out.input_json is None and out.input_ref == inline(BIG)[1]
    assert json.loads(store.get("acme", out.input_ref)) == BIG


def test_ledger_records_and_commands_offload_and_resolve_whole(store):
    rec = LedgerRecord(
        idempotency_key="k", tenant_id="acme", workflow="w", run_id="r", step="s", attempt=1,
        output_json=inline(BIG)[0], output_ref=inline(BIG)[1], committed_at=T,
    )  # fmt: skip
    assert offload(rec, store, LIMIT).output_json is None
    cmd = tool_command(BIG)
    sent = offload(cmd, store, LIMIT)
    ref = ref_of_marker_text(sent.payload_json)
    assert ref is not None and json.loads(sent.payload_json) == {MARKER_KEY: ref}
    assert resolved_command(store, sent) == cmd
    step = StepCommand(
        command_id="c", run_id="r", tenant_id="acme", workflow="w", workflow_version=1, step="s",
        kind="tool", attempt=1, input_json=inline({"tool": "email@1", "payload": BIG})[0], issued_at=T,
    )  # fmt: skip
    assert resolved_command(store, offload(step, store, LIMIT)) == step
    assert resolved_command(store, tool_command(SMALL)) == tool_command(SMALL)
    letter = DeadLetter(
        dead_letter_id="d", source_topic="t", source_partition=0, source_offset=0, value=b"x" * 5000,
        reason="r", error_class="e", failed_at=T,
    )  # fmt: skip
    assert offload(letter, store, LIMIT) is letter  # other records pass through


def test_a_claim_check_whose_blob_is_gone_raises_never_resolves_to_null(store):
    sent = offload(tool_command(BIG), store, LIMIT)
    store.delete("acme", ref_of_marker_text(sent.payload_json) or "")
    with pytest.raises(BlobMissing, match="acme"):
        resolved_command(store, sent)
    gone = offload(event(BIG), store, LIMIT)
    with pytest.raises(BlobMissing):
        resolved_json(store, "globex", None, gone.output_ref)  # another tenant's ref: not there


def test_only_an_exact_claim_check_object_is_one():
    ref = "sha256:" + "a" * 64
    assert ref_of_marker_text(marker_text(ref)) == ref
    assert ref_of_marker_text(json.dumps({MARKER_KEY: ref, "x": 1})) is None
    assert ref_of_marker_text(json.dumps({MARKER_KEY: "sha256:short"})) is None
    assert ref_of_marker_text('{"note":"' + "x" * 50 + '"}') is None


def test_a_small_payload_shaped_like_a_claim_check_travels_by_reference_and_comes_back_whole(store):
    shaped = {MARKER_KEY: "sha256:" + "b" * 64}
    sent = offload(tool_command(shaped), store, LIMIT)
    assert sent.payload_json != tool_command(shaped).payload_json  # stored, not taken for a claim check
    assert resolved_command(store, sent) == tool_command(shaped)
