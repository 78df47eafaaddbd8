"""Declaring a tool in your own code: `@tool("refund@1", idempotency="lookup", input=..., output=...)`.

A decorated function is a `Tool`: its contract (name, version, input and output pydantic models, the
idempotency mode and, for `lookup`, the function asking whether the effect already happened) and the
definition Keel's scheduler reads (`Tool.definition()`, printed by `keel-worker MODULE
--print-definitions`). `keel-worker MODULE` serves every Tool of the module (keel.worker.cli).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from keel.tooldefs.credentials import TenantCredentials
from keel.vocab import FAILURE_CLASSES, IDEMPOTENCY_MODES, LOOKUP, FailureClass

In = TypeVar("In", bound=BaseModel)
Out = TypeVar("Out", bound=BaseModel)
# A tool function: (validated input, context) -> output (the output model, or a dict of its shape),
# plain or async.
ToolFn = Callable[[Any, "ToolContext"], Any]
# A lookup: (validated input, context) -> the output of the effect made under ctx.idempotency_key, or None.
LookupFn = Callable[[Any, "ToolContext"], Any]
_SPEC = re.compile(r"^(?P<name>[a-z][a-z0-9_]*)@(?P<version>[1-9][0-9]*)$")


@dataclass(frozen=True)
class ToolContext:
    """What one call knows besides its input. `idempotency_key` is the same on every attempt of the
    step: a `provider_key` tool passes it to its provider (e.g. an Idempotency-Key header); a `lookup`
    tool stores it with the effect so its lookup can find it. `metadata` tags the effect (tenant, run,
    step) for providers that keep tags. `credentials(NAME)` is the secret NAME of the run's tenant only."""

    idempotency_key: str
    tenant_id: str
    run_id: str
    step: str
    deadline_ms: int | None
    credentials: TenantCredentials
    metadata: dict[str, str] = field(default_factory=dict)
    timeout_s: float | None = None  # how long the call may take: bound your client's timeout by it


class ToolError(Exception):
    """Raise it to say how a call failed: `failure_class` is what the scheduler acts on (`transient`:
    nothing happened, retry with backoff; `rate_limited`: wait at least `retry_after_ms`;
    `unknown_outcome`: the effect may exist, retry only under the tool's idempotency mode; `validation`,
    `auth`: never retried). Any other exception is `unknown_outcome` for a tool with side effects and
    `transient` for a read-only one."""

    def __init__(
        self, message: str, failure_class: FailureClass = "transient", retry_after_ms: int | None = None
    ) -> None:
        if failure_class not in FAILURE_CLASSES:
            raise ValueError(f"failure_class must be one of {sorted(FAILURE_CLASSES)}, not {failure_class!r}")
        super().__init__(message)
        self.failure_class, self.retry_after_ms = failure_class, retry_after_ms


class Tool(Generic[In, Out]):
    """One tool version served by a worker. Calling it calls the function (for your own tests)."""

    def __init__(
        self,
        fn: ToolFn,
        spec: str,
        *,
        idempotency: str,
        input: type[In],
        output: type[Out],
        side_effects: bool,
        lookup: LookupFn | None,
        description: str | None,
        worker: str | None,
        external_id: str | None,
        timeout_s: float | None,
        key_retention_s: float | None,
        fee_usd: float | None,
    ) -> None:
        found = _SPEC.match(spec)
        if found is None:
            raise ValueError(f"tool {spec!r}: expected NAME@VERSION, e.g. refund@1")
        if idempotency not in IDEMPOTENCY_MODES:
            raise ValueError(f"tool {spec}: idempotency must be one of {sorted(IDEMPOTENCY_MODES)}")
        self.fn, self.name, self.version = fn, found["name"], int(found["version"])
        self.idempotency_mode, self.input_model, self.output_model = idempotency, input, output
        self.side_effects, self.lookup_fn = side_effects, lookup
        self.description = (description or fn.__doc__ or "").strip()
        if not self.description:
            raise ValueError(f"tool {spec}: a description (or a docstring) says what the tool does")
        self.worker = worker or self.name
        self.external_id = external_id or _external_id(spec, output)
        self.timeout_s, self.key_retention_s, self.fee_usd = timeout_s, key_retention_s, fee_usd

    @property
    def tool(self) -> str:
        return f"{self.name}@{self.version}"

    def lookup(self, fn: LookupFn) -> LookupFn:
        """Decorator: `@refund.lookup` registers the function asking whether the effect happened."""
        self.lookup_fn = fn
        return fn

    def __call__(self, data: In, ctx: ToolContext) -> Out | Awaitable[Out]:
        result: Out | Awaitable[Out] = self.fn(data, ctx)
        return result

    def check(self) -> None:
        """What a worker checks before serving the tool."""
        if self.idempotency_mode == LOOKUP and self.lookup_fn is None:
            raise ValueError(f"{self.tool}: idempotency='lookup' needs a lookup (@{self.name}.lookup)")
        if self.idempotency_mode != LOOKUP and self.lookup_fn is not None:
            raise ValueError(f"{self.tool}: a lookup is only used with idempotency='lookup'")

    def definition(self) -> dict[str, Any]:
        """The tool's definition, as tools/*.yaml holds it: what the scheduler (its mode, the worker group
        its commands go to) and models (description, input schema) read."""
        idem: dict[str, Any] = {"mode": self.idempotency_mode}
        if self.key_retention_s is not None:
            idem["key_retention_s"] = self.key_retention_s
        out: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "worker": self.worker,
            "side_effects": self.side_effects,
            "input_schema": self.input_model.model_json_schema(),
            "output_schema": self.output_model.model_json_schema(),
            "external_id": self.external_id,
            "idempotency": idem,
        }
        if self.timeout_s is not None:
            out["timeout_s"] = self.timeout_s
        if self.fee_usd is not None:
            out["fee_usd"] = self.fee_usd
        return out


def _external_id(spec: str, output: type[BaseModel]) -> str:
    """The output field holding the provider's id of the effect, when not named: `id`, else the one
    required field ending in `_id`."""
    required = [n for n, f in output.model_fields.items() if f.is_required()]
    if "id" in required:
        return "id"
    ids = [n for n in required if n.endswith("_id")]
    if len(ids) == 1:
        return ids[0]
    raise ValueError(
        f"tool {spec}: name the output field holding the provider's id of the effect (external_id=...); "
        f"required fields: {required}"
    )


def tool(
    spec: str,
    *,
    idempotency: str,
    input: type[In],
    output: type[Out],
    side_effects: bool = True,
    lookup: LookupFn | None = None,
    description: str | None = None,
    worker: str | None = None,
    external_id: str | None = None,
    timeout_s: float | None = None,
    key_retention_s: float | None = None,
    fee_usd: float | None = None,
) -> Callable[[ToolFn], Tool[In, Out]]:
    """Declare a tool served by a worker. `idempotency`: `provider_key` (the function passes
    ctx.idempotency_key on to its provider, which dedups on it), `lookup` (a lookup function, given here
    or with `@NAME.lookup`, answers whether the effect under the key already happened; the write runs
    only when it answers None), or `none` (an unknown outcome is never retried: quarantine). `worker`:
    the worker group whose workers serve it (default: the tool's name)."""

    def wrap(fn: ToolFn) -> Tool[In, Out]:
        return Tool(
            fn,
            spec,
            idempotency=idempotency,
            input=input,
            output=output,
            side_effects=side_effects,
            lookup=lookup,
            description=description,
            worker=worker,
            external_id=external_id,
            timeout_s=timeout_s,
            key_retention_s=key_retention_s,
            fee_usd=fee_usd,
        )

    return wrap
