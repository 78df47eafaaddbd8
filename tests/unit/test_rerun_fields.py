"""What a re-run reuses and keeps (keel.rerun), and the bulk re-run's pacing and filter (keel rerun)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from keel import rerun
from keel.workflows import Catalog
from keel_ops.cli_rerun import Filter, Pacer, parse_rate

SPEC = Catalog.load().get("outbound_email")


def test_the_steps_at_or_after_a_step_follow_its_needs() -> None:
    assert rerun.at_or_after(SPEC, "log_to_crm") == {"log_to_crm", "send_email"}
    assert rerun.at_or_after(SPEC, "draft_email") == {"draft_email", "log_to_crm", "send_email"}
    with pytest.raises(ValueError, match="no step"):
        rerun.at_or_after(SPEC, "nope")


def test_origin_fields_reuse_the_steps_before_and_keep_keys_of_the_steps_after() -> None:
    outputs = {"draft_email": {"subject": "s"}, "log_to_crm": {"id": "c"}, "send_email": {"id": "m"}}
    started = {
        "draft_email": (None, "sha256:d"),  # an llm step: no key to keep
        "log_to_crm": ("acme|outbound_email|run-1|log_to_crm|sha256:1", "sha256:l"),
        "send_email": ("acme|outbound_email|run-1|send_email|sha256:2", "sha256:s"),
    }
    reused, keys = rerun.origin_fields(SPEC, "log_to_crm", outputs, started)
    assert reused == {"draft_email": {"subject": "s"}}
    assert keys == {
        "log_to_crm": {"key": "acme|outbound_email|run-1|log_to_crm|sha256:1", "input_ref": "sha256:l"},
        "send_email": {"key": "acme|outbound_email|run-1|send_email|sha256:2", "input_ref": "sha256:s"},
    }


def test_a_merge_patch_replaces_merges_and_removes() -> None:
    base = {"lead_email": "a@x", "extra": {"k": 1, "j": 2}, "drop": 1}
    patched = rerun.merge_patch(base, {"lead_email": "b@x", "extra": {"j": None, "n": 3}, "drop": None})
    assert patched == {"lead_email": "b@x", "extra": {"k": 1, "n": 3}}
    assert base["lead_email"] == "a@x"  # the origin's input is not changed


def test_the_pacer_spaces_calls_by_the_rate() -> None:
    now = [100.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    pacer = Pacer(parse_rate("2/s"), clock=lambda: now[0], sleep=sleep)
    for _ in range(3):
        pacer.wait()
    assert slept == [0.5, 0.5]
    now[0] += 10  # a slow call: no wait after it
    pacer.wait()
    assert slept == [0.5, 0.5]
    with pytest.raises(ValueError):
        parse_rate("0/s")


def test_the_filter_keeps_runs_created_in_the_range() -> None:
    since, until = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)
    flt = Filter("outbound_email", "failed", since, until)
    assert flt.created_in_range({"created_at": "2026-01-15T00:00:00+00:00"})
    assert not flt.created_in_range({"created_at": "2026-02-01T00:00:00+00:00"})
    assert not flt.created_in_range({"created_at": "2025-12-31T23:59:59+00:00"})
