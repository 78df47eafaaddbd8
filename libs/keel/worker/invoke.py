"""One call of a worker's tool, with the same guarantees as an HTTP tool's call: the input checked before
anything runs, the credentials of the call's tenant only, the lookup before the write (`lookup` mode), no
start after the deadline, exceptions classified, and the output checked against its contract (a broken
answer from a call that did run is `validation` with the JSON path, effect_accepted, kept as evidence)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ValidationError

from keel.tooldefs.credentials import CredentialSource, MissingCredential, TenantCredentials
from keel.tooldefs.output import value_at
from keel.toolrun.result import ContractViolation, Json, ToolRequest, ToolResult
from keel.vocab import AUTH, LOOKUP, NONE, TRANSIENT, UNKNOWN_OUTCOME, VALIDATION, FailureClass
from keel.worker.sdk import Tool, ToolContext, ToolError


def _now_ms() -> int:
    return int(time.time() * 1000)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def violations(exc: ValidationError) -> str:
    """pydantic's errors as `$.json.path: message`, the form every contract break is reported in."""
    parts = []
    for err in exc.errors():
        path = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
        parts.append(f"{path}: {err['msg']}")
    return "; ".join(parts)


class WorkerInvoker:
    """A worker's tool as the tool runner (keel.toolrun) calls it."""

    def __init__(
        self,
        tool: Tool[Any, Any],
        credentials: CredentialSource,
        timeout_s: float,
        clock: Callable[[], int] = _now_ms,
    ) -> None:
        self.tool, self.credentials, self.clock = tool, credentials, clock
        self.name, self.idempotency_mode = tool.name, tool.idempotency_mode
        self.fee_usd = tool.fee_usd  # on the tool_called of each call: the provider charges per call
        # Never above the deployment's KEEL_TOOL_TIMEOUT_S: the scheduler's wait for a lost call relies on it.
        self.timeout_s = timeout_s if tool.timeout_s is None else min(tool.timeout_s, timeout_s)

    def invoke(self, request: ToolRequest) -> ToolResult:
        started = time.monotonic()
        tool = self.tool

        def fail(failure: FailureClass, error: str, **extra: Any) -> ToolResult:
            latency = round((time.monotonic() - started) * 1000)
            return ToolResult(
                False, failure_class=failure, error=f"{tool.tool}: {error}", latency_ms=latency, **extra
            )

        def accept(raw: Any, sent: bool, replayed: bool) -> ToolResult:
            try:
                output = self.check_output(raw)
            except ContractViolation as exc:
                drift = f"the call ran but its answer breaks the output contract of {tool.tool}: {exc}"
                evidence = raw.model_dump(mode="json") if isinstance(raw, BaseModel) else raw
                return fail(
                    VALIDATION,
                    drift,
                    request_sent=sent,
                    effect_accepted=True,
                    evidence=evidence,
                    replayed=replayed,
                )
            latency = round((time.monotonic() - started) * 1000)
            return ToolResult(
                True,
                str(value_at(output, tool.external_id)),
                output,
                latency_ms=latency,
                request_sent=sent,
                replayed=replayed,
            )

        def late(what: str) -> ToolResult | None:
            now = self.clock()
            if request.deadline_ms is None or now < request.deadline_ms:
                return None
            reason = f"deadline passed {now - request.deadline_ms} ms before {what}: provider not called"
            return fail(TRANSIENT, reason, blocked_reason=reason)

        if tool.idempotency_mode != NONE and not request.idempotency_key:
            raise ValueError(f"{tool.tool} needs an idempotency key")
        try:
            data = tool.input_model.model_validate(request.payload)
        except ValidationError as exc:
            return fail(VALIDATION, f"invalid input: {violations(exc)}")
        effect = request.effect
        ctx = ToolContext(
            request.idempotency_key,
            effect.tenant_id,
            effect.run_id,
            effect.step,
            request.deadline_ms,
            self._tenant_credentials(effect.tenant_id),
            effect.metadata(),
            self.timeout_s,
        )
        if tool.idempotency_mode == LOOKUP and tool.lookup_fn is not None:
            too_late = late("the lookup")
            if too_late is not None:
                return too_late
            try:
                found = self._run(tool.lookup_fn, data, ctx)
            except Exception as exc:  # a lookup is a read: whatever happened to it, nothing was written
                failure, extra = self._classify(exc, read_only=True)
                return fail(failure, f"lookup failed: {_describe(exc)}", **extra)
            if found is not None:
                return accept(found, False, True)  # done before: no second write
        too_late = late("the call")
        if too_late is not None:
            return too_late
        try:
            raw = self._run(tool.fn, data, ctx)
        except Exception as exc:
            failure, extra = self._classify(exc, read_only=not tool.side_effects)
            return fail(failure, _describe(exc), request_sent=failure == UNKNOWN_OUTCOME, **extra)
        return accept(raw, True, False)

    def check_output(self, raw: Any) -> Json:
        """The output as JSON; ContractViolation (JSON paths) when it breaks the output model or lacks the
        provider's id of the effect."""
        if isinstance(raw, BaseModel):
            raw = raw.model_dump(mode="json")
        try:
            model = self.tool.output_model.model_validate(raw)
        except ValidationError as exc:
            raise ContractViolation(violations(exc)) from None
        output: Json = model.model_dump(mode="json")
        found = value_at(output, self.tool.external_id)
        if found is None or found == "":
            raise ContractViolation(f"$.{self.tool.external_id}: the provider's id of the effect is missing")
        return output

    def _tenant_credentials(self, tenant_id: str) -> TenantCredentials:
        return TenantCredentials(self.credentials, tenant_id)

    def _run(self, fn: Callable[..., Any], data: BaseModel, ctx: ToolContext) -> Any:
        """A plain function runs as is (it must bound its own I/O by ctx.timeout_s); a coroutine function
        is cancelled at the timeout, which for a write is an unknown outcome like any timeout after send."""
        if inspect.iscoroutinefunction(fn):
            return asyncio.run(asyncio.wait_for(fn(data, ctx), self.timeout_s))
        return fn(data, ctx)

    @staticmethod
    def _classify(exc: Exception, read_only: bool) -> tuple[FailureClass, dict[str, Any]]:
        if isinstance(exc, ToolError):
            return exc.failure_class, {"retry_after_ms": exc.retry_after_ms}
        if isinstance(exc, MissingCredential):
            return AUTH, {}
        # Anything unexpected may have happened after the effect: only a safe repeat may follow.
        return (TRANSIENT if read_only else UNKNOWN_OUTCOME), {}
