"""A tool definition: the versioned contract of one tool, as data (see tools/*.yaml, docs/tools.md): an
HTTP tool served by the adapters, or a tool served by a tool worker (docs/workers.md)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from keel.tooldefs.templates import fields_of, placeholders
from keel.vocab import LOOKUP, PROVIDER_KEY, FailureClass, IdempotencyMode

Json = dict[str, Any]
# A worker group's name: part of its command topic's and consumer group's names.
WORKER_GROUP = r"^[a-z][a-z0-9_-]{0,62}$"
# Separates a dotted path from its message in a validator's problem lines, so the loader can point at it.
AT = " :: "


class _Strict(BaseModel):
    # extra="forbid": a misspelt field (`idempotncy:`) is refused, never silently ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


class LookupSpec(_Strict):
    """`lookup` mode: the read that asks the provider whether the effect under a key already happened."""

    method: Literal["GET", "POST"] = "GET"
    path: str = Field(min_length=1)  # may use {idempotency_key} and input {field}s
    query: dict[str, str] = Field(default_factory=dict)  # values are templates, e.g. "{idempotency_key}"
    # Answers that mean "no such effect": nothing was written, so the write may go ahead.
    not_found_status: list[int] = Field(default_factory=lambda: [404])
    # Where the found record sits in the answer (dotted path); empty: the whole answer is the record.
    record_path: str = ""


class IdempotencySpec(_Strict):
    """How this tool makes a repeated call safe; `none` means an unknown outcome goes to quarantine."""

    mode: IdempotencyMode
    # The header carrying Keel's key on the write (e.g. Idempotency-Key): what a provider_key provider
    # dedups on; for lookup, how the provider learns the key its records are then searched by.
    header: str | None = None
    lookup: LookupSpec | None = None
    # How long the provider remembers keys (Stripe: about a day). A retry past it is treated as mode
    # `none`: the provider would take the repeated key as new, so an unknown outcome is quarantined.
    key_retention_s: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _mechanism(self) -> IdempotencySpec:
        # The mechanism an HTTP tool needs (header, lookup request) is checked by ToolDefinition: a tool
        # served by a worker has its mechanism in code.
        if self.mode == "none" and (self.header or self.lookup or self.key_retention_s):
            raise ValueError("mode none takes no `header`, `lookup` or `key_retention_s`")
        if self.mode == PROVIDER_KEY and self.lookup is not None:
            raise ValueError("`lookup` belongs to mode lookup, not provider_key")
        return self


class ErrorMatcher(_Strict):
    """One rule mapping a refusal to a failure class; the first rule that matches wins."""

    status: int | None = Field(default=None, ge=100, le=599)
    error_type: str | None = None  # the provider's error code at $.error.type
    body_contains: str | None = None  # a substring of the answer's body
    failure_class: FailureClass

    @model_validator(mode="after")
    def _something(self) -> ErrorMatcher:
        if self.status is None and self.error_type is None and self.body_contains is None:
            raise ValueError("a matcher needs at least one of status, error_type, body_contains")
        return self


class FailureSpec(_Strict):
    """Classification of refusals: these rules first, then Keel's defaults (see services/adapters)."""

    rules: list[ErrorMatcher] = Field(default_factory=list)
    honour_retry_after: bool = True  # rate_limited waits at least the provider's Retry-After
    retry_after_header: str = "Retry-After"


class RequestSpec(_Strict):
    """The write: method and path template relative to the provider's base URL, headers and body."""

    method: Literal["POST", "PUT", "PATCH", "DELETE", "GET"] = "POST"
    path: str = Field(min_length=1)  # "/v1/refunds" or "/v1/charges/{charge_id}/refunds"
    query: dict[str, str] = Field(default_factory=dict)
    # Values are templates: {field} from the input, {credential:NAME} resolved per tenant at call time.
    headers: dict[str, str] = Field(default_factory=dict)
    # `input`: the input as JSON, with Keel's effect tags in `metadata_field`; `none`: no body.
    body: Literal["input", "none"] = "input"
    # Where Keel tags the body with the logical effect (tenant, run, step): providers keep it on the
    # record, which is how a duplicate delivery of one effect can be seen. None: no tags.
    metadata_field: str | None = "metadata"


class ToolDefinition(_Strict):
    """One version of one tool. A new input or output shape is a new version."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    version: int = Field(ge=1)
    description: str = Field(min_length=1)  # what a model is told the tool does
    # The provider's base URL: KEEL_<PROVIDER>_URL (or KEEL_TOOL_URLS) per deployment, else base_url.
    provider: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]*$")
    base_url: str | None = None
    input_schema: Json
    output_schema: Json
    # Exactly one of: `request`, an HTTP tool served by the adapters service; `worker`, a tool whose code
    # runs in a tool worker of that group (keel.worker), reached through keel.tool-commands.<worker>.
    request: RequestSpec | None = None
    worker: str | None = Field(default=None, pattern=WORKER_GROUP)
    idempotency: IdempotencySpec
    failures: FailureSpec = Field(default_factory=FailureSpec)
    # Capped by the deployment's KEEL_TOOL_TIMEOUT_S: the scheduler's wait for a lost call relies on it.
    timeout_s: float | None = Field(default=None, gt=0)
    side_effects: bool = True
    fee_usd: float | None = Field(default=None, ge=0)
    requires_approval: bool = False
    external_id: str = Field(min_length=1)  # dotted path in the output: the provider's id of the effect

    @property
    def tool(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def provider_name(self) -> str:
        return self.provider or self.name

    @model_validator(mode="after")
    def _references(self) -> ToolDefinition:
        """Every placeholder names something that exists: an input field, a credential, the key."""
        known = set(_properties(self.input_schema))
        problems = self._served_by()
        templates: list[tuple[str, str, bool]] = []
        if self.request is not None:
            templates.append(("request.path", self.request.path, False))
            templates += [(f"request.query.{k}", v, False) for k, v in self.request.query.items()]
            templates += [(f"request.headers.{k}", v, False) for k, v in self.request.headers.items()]
        lookup = self.idempotency.lookup
        if lookup is not None:
            templates.append(("idempotency.lookup.path", lookup.path, True))
            templates += [(f"idempotency.lookup.query.{k}", v, True) for k, v in lookup.query.items()]
        for where, text, key_allowed in templates:
            try:
                refs = placeholders(text)
            except ValueError as exc:
                problems.append(f"{where}{AT}{exc}")
                continue
            for field in fields_of(refs, key_allowed=key_allowed):
                if field not in known:
                    problems.append(
                        f"{where}{AT}placeholder {{{field}}} is not a property of input_schema "
                        f"(known: {sorted(known)})"
                    )
        head = self.external_id.split(".")[0]
        if head not in _properties(self.output_schema):
            problems.append(f"external_id{AT}{self.external_id!r} is not a property of output_schema")
        elif head not in (self.output_schema.get("required") or []):
            # The id is the ledger's proof of the effect: an answer allowed to lack it could never commit.
            problems.append(f"external_id{AT}{head!r} must be in output_schema's `required`")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def _served_by(self) -> list[str]:
        """Exactly one of request/worker, and the idempotency mechanism that kind of tool needs."""
        spec, at = self.idempotency, f"idempotency{AT}"
        if (self.request is None) == (self.worker is None):
            return [
                f"{AT}exactly one of `request` (an HTTP tool) or `worker` (a tool worker's group) is needed"
            ]
        if self.worker is not None:
            extra = [f for f in ("header", "lookup") if getattr(spec, f)]
            extra += [f for f in ("base_url", "provider") if getattr(self, f)]
            return [f"{AT}a worker tool's mechanism is its code: no {', '.join(extra)}"] if extra else []
        if spec.mode == PROVIDER_KEY and not spec.header:
            return [f"{at}mode provider_key needs `header`: the header name the provider dedups on"]
        if spec.mode == LOOKUP and spec.lookup is None:
            return [f"{at}mode lookup needs `lookup`: the request asking whether the effect happened"]
        return []


def _properties(schema: Json) -> dict[str, Any]:
    props = schema.get("properties") if isinstance(schema, dict) else None
    return props if isinstance(props, dict) else {}
