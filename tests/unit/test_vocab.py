"""The vocabulary's words are wire values: frozen, and the typed and the runtime forms say the same."""

from typing import get_args

from keel import events as ev
from keel import vocab


def test_failure_classes_are_the_wire_values():
    assert set(get_args(vocab.FailureClass)) == vocab.FAILURE_CLASSES == {
        "transient", "rate_limited", "unknown_outcome", "validation", "auth", "budget"
    }  # fmt: skip


def test_idempotency_modes_are_the_wire_values():
    modes = {"provider_key", "lookup", "none"}
    assert set(get_args(vocab.IdempotencyMode)) == vocab.IDEMPOTENCY_MODES == modes
    assert vocab.SAFE_TO_REPEAT_MODES == {"provider_key", "lookup"}


def test_a_run_that_ended_has_the_status_of_its_ending_event():
    # The runs projection takes a run's final status from the event that ended it.
    assert vocab.TERMINAL_RUN_STATUSES == ev.TERMINAL == {"completed", "failed", "canceled"}
    assert vocab.SETTLED_RUN_STATUSES == {"completed", "failed", "canceled", "quarantined"}
