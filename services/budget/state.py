"""The budget enforcer's state of one tenant, and its versioned JSON form in keel.budget-state.

All amounts are integer micro-dollars (1 USD = 1,000,000): sums never drift like binary floats.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

# The version of the JSON form written by `to_json`. Bump it with every change of the form and add an
# upcaster to `from_json`: the changelog holds records of every version ever written.
STATE_VERSION = 1


@dataclass
class Scope:
    """One budget scope (run, step, agent-day, workflow-day, tenant-day) of a tenant."""

    spent: int = 0  # actual cost counted so far
    reserved: int = 0  # what open reservations still hold here
    limit: int | None = None  # None: no limit applies, spend is only tracked
    warned: bool = False  # budget_warning went out for this scope (once per scope)
    run: str | None = None  # run and step scopes: the run they leave with (`forget`)
    day: str | None = None  # day scopes: the UTC day (YYYY-MM-DD), dropped two days after it


@dataclass
class At:
    """Where a reservation's facts belong: the coordinates of the reserve command, kept so that a
    lapse found by a timer (no command in hand) is reported on the right run, step and attempt."""

    run_id: str
    workflow: str
    workflow_version: int | None = None
    task_id: str | None = None
    step: str | None = None
    call: str | None = None
    attempt: int = 0
    agent_id: str | None = None
    model: str | None = None
    trace_id: str | None = None


@dataclass
class Reservation:
    """One unit attempt's hold. It stays as a closed marker after close or lapse, until its run is
    forgotten (or two days after it lapsed): a reserve repeated for it is answered without a second
    hold, and a spend repeated with the same command id is not counted twice."""

    amount: int  # what was asked for and held at first
    held: int  # what it still holds in each of its scopes
    scopes: list[str]  # the scope keys it holds in
    expires_at: int  # ms since epoch: released at this time if no close arrives
    at: At
    closed: bool = False
    spends: list[str] = field(default_factory=list)  # command ids of the spends counted against it


@dataclass
class TenantBudgets:
    tenant_id: str
    scopes: dict[str, Scope] = field(default_factory=dict)
    reservations: dict[str, Reservation] = field(default_factory=dict)
    version: int = STATE_VERSION

    def copy(self) -> TenantBudgets:
        """A copy the core may change: an aborted batch must leave the committed state untouched."""
        return TenantBudgets(
            tenant_id=self.tenant_id,
            scopes={k: Scope(**vars(s)) for k, s in self.scopes.items()},
            reservations={
                k: Reservation(
                    amount=r.amount,
                    held=r.held,
                    scopes=list(r.scopes),
                    expires_at=r.expires_at,
                    at=r.at,  # never changed after the reserve
                    closed=r.closed,
                    spends=list(r.spends),
                )
                for k, r in self.reservations.items()
            },
            version=self.version,
        )

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> TenantBudgets:
        raw: dict[str, Any] = json.loads(data)
        version = raw.get("version")
        if not isinstance(version, int) or version > STATE_VERSION:
            raise ValueError(f"budget state of version {version!r} is newer than this release knows")
        return cls(
            tenant_id=raw["tenant_id"],
            scopes={k: Scope(**s) for k, s in raw["scopes"].items()},
            reservations={
                k: Reservation(**{**r, "at": At(**r["at"])}) for k, r in raw["reservations"].items()
            },
            version=STATE_VERSION,
        )


def record_key(tenant_id: str, run_id: str | None) -> str:
    """The changelog key of a tenant's day scopes (`["T"]`) or of one of its runs (`["T","R"]`): JSON, so
    no tenant or run id can make two keys collide."""
    return json.dumps([tenant_id] if run_id is None else [tenant_id, run_id], separators=(",", ":"))


def split(state: TenantBudgets) -> dict[str, TenantBudgets]:
    """The tenant's state as changelog records: one holds its day scopes, one per run its run and step
    scopes and its reservations. A command rewrites the records it changed, never the whole tenant (with
    fifty runs under way that is a hundred times less to write)."""
    tid = state.tenant_id
    parts = {record_key(tid, None): TenantBudgets(tid)}
    for key, scope in state.scopes.items():
        parts.setdefault(record_key(tid, scope.run), TenantBudgets(tid)).scopes[key] = scope
    for rid, r in state.reservations.items():
        parts.setdefault(record_key(tid, r.at.run_id), TenantBudgets(tid)).reservations[rid] = r
    return parts


def merge(tenant_id: str, parts: list[TenantBudgets]) -> TenantBudgets:
    """A tenant's state from its changelog records (the inverse of `split`)."""
    state = TenantBudgets(tenant_id)
    for part in parts:
        state.scopes.update(part.scopes)
        state.reservations.update(part.reservations)
    return state
