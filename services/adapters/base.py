"""The adapter contract (one versioned agreement with an external system) and the one tool-call result."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import AfterValidator, BaseModel

from keel.vocab import NONE, FailureClass, IdempotencyMode

Json = dict[str, Any]

InT = TypeVar("InT", bound=BaseModel)
OutT = TypeVar("OutT", bound=BaseModel)

# Deliberately loose (one @, a dot in the domain, no spaces): the provider is the real judge, this only
# keeps obviously broken addresses from costing a request.
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")


def _check_email(value: str) -> str:
    if not _EMAIL.match(value):
        raise ValueError(f"not an email address: {value!r}")
    return value


def email_address() -> AfterValidator:
    """Validator for an email-address field: `Annotated[str, email_address()]`."""
    return AfterValidator(_check_email)


@dataclass(frozen=True)
class HttpCall:
    """One HTTP request an adapter wants made, relative to the provider's base URL."""

    method: str
    path: str
    json: Json | None = None
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Effect:
    """The logical effect a write is for: tenant, run and step (and, for a tool call an agent turn asks
    for, the call). Sent to the provider as tags on the write, so the provider's own records say which
    effect each delivery was: the ground truth a duplicate check counts, whatever key a request carried."""

    tenant_id: str
    run_id: str
    step: str
    call: str | None = None  # e.g. "<turn>/<call index>" for an agent step's tool call

    def metadata(self) -> dict[str, str]:
        tags = {"keel_tenant": self.tenant_id, "keel_run": self.run_id, "keel_step": self.step}
        return tags if self.call is None else {**tags, "keel_call": self.call}


@dataclass(frozen=True)
class ToolRequest:
    """One tool call to make: the input of `call_tool`."""

    payload: Json
    idempotency_key: str
    effect: Effect
    deadline_ms: int | None = None  # epoch ms after which no request may start; None: no deadline


@dataclass(frozen=True)
class ToolResult:
    """The outcome of one tool call, success or failure: the only thing `call_tool` returns."""

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


class Adapter(ABC, Generic[InT, OutT]):
    """A versioned contract with an external system. A new input or output shape is a new version, so a
    recorded call can always be replayed against the contract it was made under."""

    name: ClassVar[str]  # also the key of the provider's base URL and of tenants' credentials
    version: ClassVar[int]
    idempotency_mode: ClassVar[IdempotencyMode]
    Input: type[InT]
    # Validating the provider's answer against Output is the schema-drift guard: a response that does not
    # fit (a null id, a renamed field) is a validation failure, never a success.
    Output: type[OutT]

    @property
    def tool(self) -> str:
        return f"{self.name}@{self.version}"

    @abstractmethod
    def request(self, payload: InT, idempotency_key: str, effect: Effect) -> HttpCall:
        """The write request for `payload`, carrying the key when the mode relies on it and the effect's
        tags (see `tagged`)."""

    @abstractmethod
    def external_id(self, output: OutT) -> str:
        """The provider's authoritative id of the effect."""

    def lookup_call(self, idempotency_key: str) -> HttpCall:
        """`lookup` mode: the request asking whether the effect under this key already happened."""
        raise NotImplementedError(f"{self.tool} has no lookup (idempotency_mode={self.idempotency_mode})")

    def found_output(self, status: int, body: Any) -> Any | None:
        """`lookup` mode: the stored output when the lookup answered 2xx or 404; None means not found."""
        return None if status == 404 else body

    def tagged(self, body: Json, effect: Effect) -> Json:
        """`body` with the effect's tags in the provider's metadata field. Providers that call the field
        otherwise override this."""
        return {**body, "metadata": effect.metadata()}

    def key_headers(self, idempotency_key: str) -> dict[str, str]:
        if self.idempotency_mode == NONE:
            return {}
        return {"Idempotency-Key": idempotency_key}
