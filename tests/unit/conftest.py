"""The simulated providers as real loopback HTTP servers, one of each per test module."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from infra.simulators.runner import running

# Unit tests drive services' shells without a budget enforcer: the scheduler issues paid attempts at once.
# Tests of the budget protocol turn budgets on explicitly (a BudgetPolicy, or SchedulerSettings).
os.environ.setdefault("KEEL_BUDGETS", "false")


@pytest.fixture(scope="module")
def email_url() -> Iterator[str]:
    with running("email") as url:
        yield url


@pytest.fixture(scope="module")
def crm_url() -> Iterator[str]:
    with running("crm") as url:
        yield url


@pytest.fixture(scope="module")
def model_url() -> Iterator[str]:
    with running("model") as url:
        yield url
