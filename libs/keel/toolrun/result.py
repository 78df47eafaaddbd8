"""One tool call's request and its one result: what every tool runner (the HTTP adapters, a tool worker)
takes and gives back, whatever serves the tool."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from keel.vocab import FailureClass

Json = dict[str, Any]


@dataclass(frozen=True)
class Effect:
    """The logical effect a write is for: tenant, run and step (and, for a tool call an agent turn asks
    for, the call). Sent to the provider as tags on the write, so the provider's own records say which
    effect each delivery was: the ground truth a duplicate check counts, whatever key a request carried."""

    tenant_id: str
    run_id: str
    step: str
    call: str | None = None  # an agent step's sub-step: "turn-N.call-I" for a tool call, "turn-N" for a turn

    def metadata(self) -> dict[str, str]:
        tags = {"keel_tenant": self.tenant_id, "keel_run": self.run_id, "keel_step": self.step}
        return tags if self.call is None else {**tags, "keel_call": self.call}


@dataclass(frozen=True)
class ToolRequest:
    """One tool call to make."""

    payload: Json
    idempotency_key: str
    effect: Effect
    deadline_ms: int | None = None  # epoch ms after which no request may start; None: no deadline
    # A human's approval (docs/quarantine.md): (content ref of the approved payload, the approved key);
    # a tool that requires approval is called only when both are this call's.
    approved: tuple[str, str] | None = None


@dataclass(frozen=True)
class ToolResult:
    """The outcome of one tool call, success or failure: the only thing a runner's call returns."""

    ok: bool
    external_id: str | None = None  # the provider's authoritative id, the ledger's proof of the effect
    output: Json | None = None  # the validated output, as JSON
    failure_class: FailureClass | None = None
    http_status: int | None = None
    error: str | None = None
    latency_ms: int = 0
    retry_after_ms: int | None = None
    request_sent: bool = False  # whether the write may have reached the provider during this call
    replayed: bool = False  # the effect had already happened: the provider replayed it or a lookup found it
    # The provider proved it accepted the call (a 2xx, or a lookup found the record), yet the answer broke
    # the output contract: the effect exists, so this failure must never be treated as "nothing happened".
    effect_accepted: bool = False
    evidence: Any = None  # the provider's raw answer (JSON, or the text) kept for review when it broke
    blocked_reason: str | None = None  # why no request was made at all (deadline passed, key in flight...)

    def to_dict(self) -> Json:
        return asdict(self)


class ContractViolation(ValueError):
    """A value breaks one side of a tool's contract; the message names each break by JSON path."""
