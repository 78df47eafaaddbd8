"""Whose run a message belongs to (pure): the checks that keep one tenant's commands and facts off
another tenant's run (docs/tenancy.md, Tenant provenance).

The idempotency key names its tenant in its first field (keel.idempotency, a frozen format), and a run's
tenant is recorded once, by the request that created it. A tool or step command (or a tool result, at
the ledger) whose key names another tenant than it, or a fact, request or control command whose tenant
is not its run's, is refused before anything is called, committed or decided: the services dead-letter
it with TENANT_MISMATCH, and no credential of either tenant is used.
"""

from __future__ import annotations

TENANT_MISMATCH = "tenant_mismatch"


def key_tenant(idempotency_key: str) -> str:
    """The tenant an idempotency key names: its first field."""
    return idempotency_key.partition("|")[0]


def command_problem(tenant_id: str, idempotency_key: str | None, what: str = "command") -> str | None:
    """Why a command (or a fact about one) must not be acted on, when its key names another tenant than
    it; None when they agree."""
    if idempotency_key is None:
        return None
    owner = key_tenant(idempotency_key)
    if owner == tenant_id:
        return None
    return (
        f"the {what} is for tenant {tenant_id!r} but its idempotency key names tenant {owner!r}: "
        "refused before any call or commit, with no tenant's credentials"
    )


def run_problem(run_tenant: str | None, message_tenant: str, what: str, run_id: str) -> str | None:
    """Why a message must not touch a run, when it names another tenant than the run's recorded one."""
    if run_tenant is None or run_tenant == message_tenant:
        return None
    return (
        f"a {what} of tenant {message_tenant!r} for run {run_id}, which belongs to tenant {run_tenant!r}: "
        "refused, the run is not touched"
    )
