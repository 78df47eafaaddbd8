"""Restoring changelog state while the previous owner's last transaction is still open.

A read_committed reader reaches "end of partition" at the last stable offset: a restore that stopped
there missed the previous owner's last batch, whose input offsets the new owner then resumed after.
"""

from __future__ import annotations

import threading

import pytest
from confluent_kafka import Producer
from helpers import make_topics, unique

from keel.settings import Settings
from keel.statestore import ChangelogState

pytestmark = pytest.mark.integration


def _previous_owner(settings: Settings, changelog: str) -> Producer:
    """A previous owner that committed one batch and has its last batch on the log, not yet committed."""
    prev = Producer({"bootstrap.servers": settings.kafka_bootstrap, "transactional.id": unique("prev")})
    prev.init_transactions(30)
    prev.begin_transaction()
    prev.produce(changelog, key="run-1", value=b"first", partition=0)
    prev.commit_transaction(30)
    prev.begin_transaction()
    prev.produce(changelog, key="run-1", value=b"second", partition=0)
    prev.produce(changelog, key="run-2", value=b"new", partition=0)
    prev.flush(10)
    return prev


def _restore_in_background(
    settings: Settings, changelog: str
) -> tuple[ChangelogState[str], threading.Thread]:
    state: ChangelogState[str] = ChangelogState(settings, changelog, str.encode, bytes.decode, group="g")
    loader = threading.Thread(target=state.load, args=({0}, 30.0), daemon=True)
    loader.start()
    loader.join(2.0)  # a restore that stops at the last stable offset has returned by now
    return state, loader


def test_restore_waits_for_the_previous_owners_open_transaction_to_commit(stack):
    changelog = unique("test.changelog")
    make_topics(stack, changelog)
    prev = _previous_owner(stack, changelog)
    state, loader = _restore_in_background(stack, changelog)
    prev.commit_transaction(30)
    loader.join(30)
    assert not loader.is_alive()
    assert (state.get("run-1"), state.get("run-2")) == ("second", "new")


def test_restore_waits_for_the_previous_owners_open_transaction_to_abort(stack):
    changelog = unique("test.changelog")
    make_topics(stack, changelog)
    prev = _previous_owner(stack, changelog)
    state, loader = _restore_in_background(stack, changelog)
    prev.abort_transaction(30)
    loader.join(30)
    assert not loader.is_alive()
    assert (state.get("run-1"), state.get("run-2")) == ("first", None)
