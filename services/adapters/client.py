"""Makes one tool call through an adapter and turns every outcome into a ToolResult, never an exception."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
from pydantic import ValidationError

from keel.vocab import AUTH, LOOKUP, NONE, TRANSIENT, VALIDATION, FailureClass
from services.adapters.base import Adapter, HttpCall, ToolRequest, ToolResult
from services.adapters.classify import (
    classify_exception,
    classify_http,
    parse_retry_after,
    request_was_sent,
)
from services.adapters.config import AdapterSettings


def summarise(exc: ValidationError, limit: int = 5) -> str:
    """A pydantic error in one line: `field: message; ...`."""
    parts = [f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in exc.errors()[:limit]]
    more = exc.error_count() - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def json_path(loc: tuple[int | str, ...]) -> str:
    """A pydantic error location as a JSON path: ("items", 0, "id") -> "$.items[0].id"."""
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)


def contract_breaks(exc: ValidationError, limit: int = 5) -> str:
    """What in a provider's answer breaks the output contract, by JSON path: `$.field: message; ...`."""
    parts = [f"{json_path(tuple(e['loc']))}: {e['msg']}" for e in exc.errors()[:limit]]
    more = exc.error_count() - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def _provider_error(response: httpx.Response) -> tuple[str | None, str]:
    """(the provider's error type, its message) from an error answer."""
    try:
        error = response.json()["error"]
        kind, message = error.get("type"), error.get("message")
        if isinstance(message, str):
            return (kind if isinstance(kind, str) else None), message
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    return None, response.text[:200] or response.reason_phrase


def _now_ms() -> int:
    return int(time.time() * 1000)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class _Call:
    """One call_tool invocation: the pieces every outcome needs, and the clock."""

    def __init__(
        self,
        adapter: Adapter[Any, Any],
        settings: AdapterSettings,
        http: httpx.Client,
        deadline_ms: int | None,
        clock: Callable[[], int],
    ) -> None:
        self.adapter, self.settings, self.http = adapter, settings, http
        self.deadline_ms, self.clock = deadline_ms, clock
        self.started = time.monotonic()
        self.base_url = settings.base_url(adapter.name)  # a missing URL is a deployment bug: raise early
        self.headers: dict[str, str] = {}

    def elapsed_ms(self) -> int:
        return round((time.monotonic() - self.started) * 1000)

    def fail(self, failure: FailureClass, error: str, sent: bool, **extra: Any) -> ToolResult:
        error = f"{self.adapter.tool}: {error}"
        return ToolResult(
            False, None, None, failure, error=error, latency_ms=self.elapsed_ms(), request_sent=sent, **extra
        )

    def past_deadline(self, what: str) -> ToolResult | None:
        """A blocked result when the deadline has passed: the caller already counts this attempt as lost
        and may have issued the next one, so no request may start now."""
        if self.deadline_ms is None:
            return None
        now = self.clock()
        if now < self.deadline_ms:
            return None
        reason = f"deadline passed {now - self.deadline_ms} ms before {what}: provider not called"
        return self.fail(TRANSIENT, reason, False, blocked_reason=reason)

    def send(self, call: HttpCall) -> httpx.Response:
        return self.http.request(
            call.method,
            self.base_url + call.path,
            json=call.json,
            params=call.params or None,
            headers={**self.headers, **call.headers},
            timeout=self.settings.tool_timeout_s,
        )

    def refused(self, call: HttpCall, response: httpx.Response, sent: bool) -> ToolResult:
        error_type, message = _provider_error(response)
        what = f"{call.method} {call.path} -> HTTP {response.status_code}: {message}"
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        return self.fail(
            classify_http(response.status_code, error_type),
            what,
            sent,
            http_status=response.status_code,
            retry_after_ms=retry_after,
        )

    def accept(self, raw: Any, status: int, sent: bool, replayed: bool) -> ToolResult:
        """Validate the provider's output: the schema-drift guard. Only called with a 2xx answer (or a
        lookup that found the record), so a broken answer still proves the effect exists: it fails as
        `validation` with effect_accepted and the raw answer kept as evidence, never as "not done"."""
        try:
            output = self.adapter.Output.model_validate(raw)
        except ValidationError as exc:
            drift = (
                f"provider accepted the call (HTTP {status}) but its answer breaks the output contract "
                f"of {self.adapter.tool}: {contract_breaks(exc)}"
            )
            return self.fail(
                VALIDATION,
                drift,
                sent,
                http_status=status,
                effect_accepted=True,
                evidence=raw,
                replayed=replayed,
            )
        return ToolResult(
            True,
            self.adapter.external_id(output),
            output.model_dump(mode="json"),
            http_status=status,
            latency_ms=self.elapsed_ms(),
            request_sent=sent,
            replayed=replayed,
        )

    def lookup(self, idempotency_key: str) -> ToolResult | None:
        """The result of an earlier effect under this key, a failure to ask, or None: not done yet."""
        call = self.adapter.lookup_call(idempotency_key)
        try:
            response = self.send(call)
        except httpx.HTTPError as exc:
            # A lookup is a read: whatever happened to it, no effect was made, so it is safe to retry.
            return self.fail(TRANSIENT, f"lookup {call.path} failed: {_describe(exc)}", False)
        if not (response.is_success or response.status_code == 404):
            return self.refused(call, response, False)
        try:
            found = self.adapter.found_output(response.status_code, response.json())
        except ValueError:
            return self.fail(
                VALIDATION, f"lookup {call.path} answered non-JSON", False, http_status=response.status_code
            )
        return None if found is None else self.accept(found, response.status_code, False, True)


def call_tool(
    adapter: Adapter[Any, Any],
    request: ToolRequest,
    settings: AdapterSettings,
    http: httpx.Client,
    clock: Callable[[], int] = _now_ms,
) -> ToolResult:
    """Call `adapter` for `request` (its payload, key, effect and deadline). Provider behaviour of any
    kind comes back as a ToolResult; only a caller's mistake (no key, no URL configured) raises. No
    request starts once the deadline has passed (checked before the lookup and again before the write,
    since after-commit work can start late)."""
    key, tenant_id = request.idempotency_key, request.effect.tenant_id
    if adapter.idempotency_mode != NONE and not key:
        raise ValueError(f"{adapter.tool} needs an idempotency key")
    c = _Call(adapter, settings, http, request.deadline_ms, clock)
    try:
        data = adapter.Input.model_validate(request.payload)
    except ValidationError as exc:
        return c.fail(VALIDATION, f"invalid input: {summarise(exc)}", False)
    token = settings.credential(tenant_id, adapter.name)
    if token is None:
        return c.fail(AUTH, f"tenant {tenant_id!r} has no credentials for {adapter.name!r}", False)
    c.headers = {"Authorization": f"Bearer {token}"}
    if adapter.idempotency_mode == LOOKUP:
        done = c.past_deadline("the lookup") or c.lookup(key)
        if done is not None:
            return done  # found (no second write), could not ask (nothing written), or too late
    call = adapter.request(data, key, request.effect)
    late = c.past_deadline(f"{call.method} {call.path}")
    if late is not None:
        return late
    try:
        response = c.send(call)
    except httpx.HTTPError as exc:
        sent = request_was_sent(exc)
        return c.fail(
            classify_exception(exc, sent), f"{call.method} {call.path} failed: {_describe(exc)}", sent
        )
    if not response.is_success:
        return c.refused(call, response, True)
    try:
        raw = response.json()
    except ValueError:
        return c.fail(
            VALIDATION,
            f"{call.method} {call.path} answered HTTP {response.status_code} with a body that is not JSON",
            True,
            http_status=response.status_code,
            effect_accepted=True,
            evidence=response.text,
        )
    replayed = response.headers.get("idempotent-replayed", "").lower() == "true"
    return c.accept(raw, response.status_code, True, replayed)
