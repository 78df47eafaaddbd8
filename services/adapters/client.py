"""Makes one tool call through an adapter and turns every outcome into a ToolResult, never an exception."""

from __future__ import annotations

import time
from typing import Any

import httpx
from pydantic import ValidationError

from services.adapters.base import Adapter, HttpCall, Json, ToolResult
from services.adapters.classify import (
    FailureClass,
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


def _provider_message(response: httpx.Response) -> str:
    try:
        body = response.json()
        message = body["error"]["message"]
        if isinstance(message, str):
            return message
    except (ValueError, KeyError, TypeError):
        pass
    return response.text[:200] or response.reason_phrase


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class _Call:
    """One call_tool invocation: the pieces every outcome needs, and the clock."""

    def __init__(self, adapter: Adapter[Any, Any], settings: AdapterSettings, http: httpx.Client) -> None:
        self.adapter, self.settings, self.http = adapter, settings, http
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
        what = f"{call.method} {call.path} -> HTTP {response.status_code}: {_provider_message(response)}"
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        return self.fail(
            classify_http(response.status_code),
            what,
            sent,
            http_status=response.status_code,
            retry_after_ms=retry_after,
        )

    def accept(self, raw: Any, status: int, sent: bool, replayed: bool) -> ToolResult:
        """Validate the provider's output: the schema-drift guard."""
        try:
            output = self.adapter.Output.model_validate(raw)
        except ValidationError as exc:
            drift = f"provider output does not match {self.adapter.tool}: {summarise(exc)}"
            return self.fail("validation", drift, sent, http_status=status)
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
            return self.fail("transient", f"lookup {call.path} failed: {_describe(exc)}", False)
        if not (response.is_success or response.status_code == 404):
            return self.refused(call, response, False)
        try:
            found = self.adapter.found_output(response.status_code, response.json())
        except ValueError:
            return self.fail(
                "validation", f"lookup {call.path} answered non-JSON", False, http_status=response.status_code
            )
        return None if found is None else self.accept(found, response.status_code, False, True)


def call_tool(
    adapter: Adapter[Any, Any],
    payload: Json,
    idempotency_key: str,
    tenant_id: str,
    settings: AdapterSettings,
    http: httpx.Client,
) -> ToolResult:
    """Call `adapter` with `payload` for `tenant_id` under `idempotency_key`. Provider behaviour of any
    kind comes back as a ToolResult; only a caller's mistake (no key, no URL configured) raises."""
    if adapter.idempotency_mode != "none" and not idempotency_key:
        raise ValueError(f"{adapter.tool} needs an idempotency key")
    c = _Call(adapter, settings, http)
    try:
        data = adapter.Input.model_validate(payload)
    except ValidationError as exc:
        return c.fail("validation", f"invalid input: {summarise(exc)}", False)
    token = settings.credential(tenant_id, adapter.name)
    if token is None:
        return c.fail("auth", f"tenant {tenant_id!r} has no credentials for {adapter.name!r}", False)
    c.headers = {"Authorization": f"Bearer {token}"}
    if adapter.idempotency_mode == "lookup":
        done = c.lookup(idempotency_key)
        if done is not None:
            return done  # found (no second write) or could not ask (nothing written)
    call = adapter.request(data, idempotency_key)
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
            "validation",
            f"{call.method} {call.path} answered non-JSON",
            True,
            http_status=response.status_code,
        )
    replayed = response.headers.get("idempotent-replayed", "").lower() == "true"
    return c.accept(raw, response.status_code, True, replayed)
