"""KEEL_BUDGET_LIMITS: day limits per tenant, agent and workflow, in integer micro-dollars."""

from __future__ import annotations

import pytest

from keel.budget_limits import Limits
from services.budget.config import BudgetSettings

CONFIG = """{
  "tenant_day_usd": {"*": 50.0, "acme": 10.0},
  "agent_day_usd": {"support_triage_v1": 5.0, "*": 7.5},
  "workflow_day_usd": {"support_triage": 20.0},
  "tenants": {"globex": {"agent_day_usd": {"support_triage_v1": 2.0}, "tenant_day_usd": 3.0}}
}"""


def test_defaults_overrides_and_no_limit():
    limits = Limits.from_json(CONFIG)
    assert limits.tenant_day_limit("acme") == 10_000_000
    assert limits.tenant_day_limit("initech") == 50_000_000  # "*"
    assert limits.tenant_day_limit("globex") == 3_000_000  # its own entry
    assert limits.agent_day_limit("acme", "support_triage_v1") == 5_000_000
    assert limits.agent_day_limit("globex", "support_triage_v1") == 2_000_000  # the tenant's override wins
    assert limits.agent_day_limit("acme", "other_agent") == 7_500_000
    assert limits.workflow_day_limit("acme", "support_triage") == 20_000_000
    assert limits.workflow_day_limit("acme", "outbound_email") is None  # no entry, no "*": no limit


def test_no_configuration_means_no_day_limits():
    limits = Limits.from_json(None)
    assert limits.tenant_day_limit("acme") is None and limits.warn_permille == 800


def test_amounts_become_exact_micro_dollars():
    assert Limits.from_json('{"tenant_day_usd": {"*": 0.1}}').tenant_day_limit("x") == 100_000
    assert Limits.from_json('{"tenant_day_usd": {"*": 19.99}}').tenant_day_limit("x") == 19_990_000


@pytest.mark.parametrize(
    "bad",
    [
        '{"tenant_day_usd": {"*": -1}}',
        '{"tenant_day_usd": {"*": "ten"}}',
        '{"tenant_day_usd": {"*": true}}',
        '{"tenant_day_usd": {"*": NaN}}',
        '{"tenant_usd": {"*": 1}}',
        '{"tenants": {"acme": {"budget": 1}}}',
        "[1]",
    ],
)
def test_a_malformed_configuration_fails_loudly(bad):
    with pytest.raises(ValueError, match="KEEL_BUDGET_LIMITS"):
        Limits.from_json(bad)


def test_the_settings_read_the_environment(monkeypatch):
    monkeypatch.setenv("KEEL_BUDGET_LIMITS", '{"tenant_day_usd": {"acme": 1.5}}')
    monkeypatch.setenv("KEEL_BUDGET_WARN_AT", "0.5")
    limits = BudgetSettings().limits()
    assert limits.tenant_day_limit("acme") == 1_500_000 and limits.warn_permille == 500
