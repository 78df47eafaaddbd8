"""The simulated providers as real loopback HTTP servers, one of each per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from infra.simulators.runner import running


@pytest.fixture(autouse=True)
def _no_budget_enforcer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unit tests drive services' shells without a budget enforcer: the scheduler issues paid attempts at
    once. Per test (never for the session: services the e2e tests start later must see budgets on); tests
    of the budget protocol turn budgets on explicitly (a BudgetPolicy, or SchedulerSettings)."""
    monkeypatch.setenv("KEEL_BUDGETS", "false")


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
