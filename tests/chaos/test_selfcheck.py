"""The chaos verdict seen red: each run breaks one guarantee on purpose and expects its check to fail.

A check that has never failed is not evidence. `make chaos-selfcheck` runs these (not part of
`make test`): the adapters drop the Idempotency-Key, `lookup` adapters skip the lookup against a CRM
without key dedup, the ledger writes every commit twice. Each must turn its check red.
"""

from __future__ import annotations

import os

import pytest
from ledger_audit import ledger_commits_from_run_events
from test_chaos import chaos

pytestmark = pytest.mark.selfcheck


@pytest.fixture(autouse=True)
def _small(monkeypatch):
    import test_chaos

    monkeypatch.setattr(test_chaos, "RUNS", int(os.environ.get("KEEL_SELFCHECK_RUNS", "18")))
    monkeypatch.setattr(test_chaos, "SECONDS", 10.0)


def test_without_idempotency_keys_the_duplicate_check_goes_red(stack, keel, sims):
    verdict, *_ = chaos(stack, keel[0], sims, hooks="drop_key", crm_dedup="key", kills=False)
    print(verdict.figures())
    assert verdict.duplicates, "no duplicate seen although the adapters sent no key"


def test_without_the_lookup_the_duplicate_check_goes_red(stack, keel, sims):
    verdict, *_ = chaos(stack, keel[0], sims, hooks="skip_lookup", crm_dedup="none", kills=False)
    print(verdict.figures())
    assert verdict.duplicates, "no duplicate seen although the CRM adapter never looked up"


def test_a_ledger_that_commits_twice_turns_the_ledger_checks_red(stack, keel, sims):
    verdict, *_ = chaos(stack, keel[0], sims, hooks="commit_twice", crm_dedup="none", kills=False)
    print(verdict.figures())
    assert verdict.ledger_duplicates, "the ledger topic check missed the double commits"
    assert ledger_commits_from_run_events(stack).duplicates, "the run-event audit missed them"
    assert verdict.lifecycle, "the lifecycle check missed steps committed twice"
