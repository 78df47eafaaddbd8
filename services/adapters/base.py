"""The adapter contract (one versioned agreement with an external system) and the one tool-call result."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from keel.toolrun.result import ContractViolation, Effect, Json, ToolRequest, ToolResult
from keel.vocab import NONE, FailureClass, IdempotencyMode
from services.adapters.classify import classify_http, parse_retry_after

__all__ = [
    "Adapter",
    "ContractViolation",
    "Effect",
    "HttpCall",
    "Json",
    "ToolRequest",
    "ToolResult",
]


@dataclass(frozen=True)
class HttpCall:
    """One HTTP request an adapter wants made, relative to the provider's base URL."""

    method: str
    path: str
    json: Json | None = None
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)


class Adapter(ABC):
    """A versioned contract with an external system. A new input or output shape is a new version, so a
    recorded call can always be replayed against the contract it was made under. Keel's tools are served
    by one implementation driven by a definition (services/adapters/http_tool.py, tools/*.yaml)."""

    name: str  # the tool's name; its provider's base URL and breaker go by `provider`
    provider: str
    version: int
    idempotency_mode: IdempotencyMode
    key_header: str | None = "Idempotency-Key"  # the header carrying the key on the write, if any
    default_base_url: str | None = None  # used when the deployment configures no URL for the provider
    requires_approval: bool = False  # an irreversible action a human must approve before it is called
    fee_usd: float | None = None  # what the provider charges per call made (the definition's fee_usd)

    @property
    def tool(self) -> str:
        return f"{self.name}@{self.version}"

    @abstractmethod
    def check_input(self, payload: Any) -> Json:
        """The input as the call will use it; raises ContractViolation when it breaks the input schema."""

    @abstractmethod
    def check_output(self, raw: Any) -> Json:
        """The provider's answer as the step's output. Raises ContractViolation when it breaks the output
        schema: the schema-drift guard (a null id, a renamed field is a validation failure, never a
        success)."""

    @abstractmethod
    def request(self, payload: Json, idempotency_key: str, effect: Effect) -> HttpCall:
        """The write request for `payload`, carrying the key when the mode relies on it and the effect's
        tags (see `tagged`)."""

    @abstractmethod
    def external_id(self, output: Json) -> str:
        """The provider's authoritative id of the effect."""

    @abstractmethod
    def auth_headers(self, credential: Callable[[str], str]) -> dict[str, str]:
        """Headers carrying the tenant's credentials, each resolved by name through `credential` (which
        raises when the tenant has none of that name)."""

    def classify(self, status: int, error_type: str | None, body: str) -> FailureClass:
        """The failure class of a refusal: Keel's defaults unless a definition says otherwise."""
        return classify_http(status, error_type)

    def retry_after_ms(self, headers: Mapping[str, str]) -> int | None:
        return parse_retry_after(headers.get("retry-after"))

    def timeout_s(self, ceiling_s: float) -> float:
        """The HTTP timeout of a call: never above the deployment's, which the scheduler relies on."""
        return ceiling_s

    def lookup_call(self, idempotency_key: str, payload: Json) -> HttpCall:
        """`lookup` mode: the request asking whether the effect under this key already happened."""
        raise NotImplementedError(f"{self.tool} has no lookup (idempotency_mode={self.idempotency_mode})")

    def found_output(self, status: int, body: Any) -> Any | None:
        """`lookup` mode: the stored output when the lookup answered 2xx or 404; None means not found."""
        return None if status == 404 else body

    def is_not_found(self, status: int) -> bool:
        return status == 404

    def tagged(self, body: Json, effect: Effect) -> Json:
        """`body` with the effect's tags in the provider's metadata field. Providers that call the field
        otherwise override this."""
        return {**body, "metadata": effect.metadata()}

    def key_headers(self, idempotency_key: str) -> dict[str, str]:
        if self.idempotency_mode == NONE or not self.key_header:
            return {}
        return {self.key_header: idempotency_key}
