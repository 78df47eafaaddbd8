"""A provider forgets idempotency keys after its retention window (Stripe: about a day): past it, a retry
of an unknown outcome is treated as mode `none` and the step is quarantined, never resent."""

from __future__ import annotations

from test_scheduler_core import CATALOG, MODES, T0, _at_send, commands, kinds, send_failed, started

from keel.contracts import RunEvent
from services.scheduler.core import decide, due

RETENTION = {"email@1": 60.0}.get  # the provider keeps keys for a minute


def test_within_the_retention_an_unknown_outcome_is_retried_under_the_key():
    state = started()
    _at_send(state)  # the send's first attempt issued at T0
    d = decide(state, send_failed(state, "unknown_outcome"), 0, T0 + 59_000, CATALOG, key_retention=RETENTION)
    assert kinds(d) == ["retry_scheduled"]


def test_past_the_retention_an_unknown_outcome_is_quarantined_not_resent():
    state = started()
    _at_send(state)
    d = decide(state, send_failed(state, "unknown_outcome"), 0, T0 + 61_000, CATALOG, key_retention=RETENTION)
    assert kinds(d) == ["quarantined"] and commands(d) == []
    [held] = [o for o in d.outputs if isinstance(o, RunEvent)]
    assert "forgets idempotency keys after 60 s" in (held.quarantine.reason or "")


def test_a_lost_attempt_past_the_retention_is_quarantined():
    state = started()
    _at_send(state)
    deadline = state.steps["send_email"].deadline
    assert deadline is not None
    d = due(state, max(deadline, T0 + 61_000), CATALOG, MODES, key_retention=RETENTION)
    assert kinds(d) == ["quarantined"] and commands(d) == []


def test_without_a_retention_nothing_changes():
    state = started()
    _at_send(state)
    d = decide(state, send_failed(state, "unknown_outcome"), 0, T0 + 10**9, CATALOG)
    assert kinds(d) == ["retry_scheduled"]
