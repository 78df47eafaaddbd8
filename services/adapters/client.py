"""Makes one tool call through an adapter and turns every outcome into a ToolResult, never an exception."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from keel.credstore import CredentialError, CredentialUnavailable
from keel.idempotency import content_ref
from keel.tooldefs import MissingCredential
from keel.tooldefs.credentials import TenantCredentials
from keel.vocab import AUTH, LOOKUP, NONE, TRANSIENT, VALIDATION, FailureClass
from services.adapters.base import Adapter, ContractViolation, HttpCall, Json, ToolRequest, ToolResult
from services.adapters.classify import classify_exception, request_was_sent
from services.adapters.config import AdapterSettings


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
        adapter: Adapter,
        settings: AdapterSettings,
        http: httpx.Client,
        deadline_ms: int | None,
        clock: Callable[[], int],
    ) -> None:
        self.adapter, self.settings, self.http = adapter, settings, http
        self.deadline_ms, self.clock = deadline_ms, clock
        self.started = time.monotonic()
        # A missing URL is a deployment bug: raise early.
        self.base_url = settings.base_url(adapter.provider, adapter.default_base_url)
        self.headers: dict[str, str] = {}
        self.payload: Json = {}

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
            timeout=self.adapter.timeout_s(self.settings.tool_timeout_s),
        )

    def refused(self, call: HttpCall, response: httpx.Response, sent: bool) -> ToolResult:
        error_type, message = _provider_error(response)
        what = f"{call.method} {call.path} -> HTTP {response.status_code}: {message}"
        retry_after = self.adapter.retry_after_ms(response.headers)
        return self.fail(
            self.adapter.classify(response.status_code, error_type, response.text),
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
            output = self.adapter.check_output(raw)
        except ContractViolation as exc:
            drift = (
                f"provider accepted the call (HTTP {status}) but its answer breaks the output contract "
                f"of {self.adapter.tool}: {exc}"
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
            output,
            http_status=status,
            latency_ms=self.elapsed_ms(),
            request_sent=sent,
            replayed=replayed,
        )

    def lookup(self, idempotency_key: str) -> ToolResult | None:
        """The result of an earlier effect under this key, a failure to ask, or None: not done yet."""
        call = self.adapter.lookup_call(idempotency_key, self.payload)
        try:
            response = self.send(call)
        except httpx.HTTPError as exc:
            # A lookup is a read: whatever happened to it, no effect was made, so it is safe to retry.
            return self.fail(TRANSIENT, f"lookup {call.path} failed: {_describe(exc)}", False)
        if self.adapter.is_not_found(response.status_code):
            return None  # not done yet: whatever the body says, the write may go ahead
        if not response.is_success:
            return self.refused(call, response, False)
        try:
            found = self.adapter.found_output(response.status_code, response.json())
        except ValueError:
            return self.fail(
                VALIDATION, f"lookup {call.path} answered non-JSON", False, http_status=response.status_code
            )
        return None if found is None else self.accept(found, response.status_code, False, True)


def approval_refusal(request: ToolRequest) -> str | None:
    """Why the approval a call carries does not release it (None: it does). An approval is bound to the
    exact payload (its content ref) and key a human was shown: it can never release another payload."""
    if request.approved is None:
        return "no approval is bound to this call"
    input_ref, key = request.approved
    if key != request.idempotency_key:
        return "the approval was given for another idempotency key"
    if input_ref != content_ref(request.payload):
        return "the approval was given for another payload"
    return None


def call_tool(
    adapter: Adapter,
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
    # A grant is checked whenever there is one (a workflow may ask approval of any tool step's call), and
    # a tool whose definition requires approval is never called without one.
    if adapter.requires_approval or request.approved is not None:
        refused = approval_refusal(request)
        if refused is not None:
            return c.fail(AUTH, f"requires approval, and {refused}: not sent", False)
    try:
        data = c.payload = adapter.check_input(request.payload)
    except ContractViolation as exc:
        # Nothing was sent: the input breaks the tool's contract (a human may correct it and retry).
        why = f"invalid input: {exc}"
        return c.fail(VALIDATION, why, False, blocked_reason=why)
    try:
        # Resolved for this call's tenant only: a definition can name a credential, never another
        # tenant's.
        c.headers = adapter.auth_headers(TenantCredentials(settings.credentials(), tenant_id))
    except MissingCredential as exc:
        return c.fail(AUTH, f"{exc}: no credentials to call {adapter.provider!r}", False)
    except CredentialUnavailable as exc:  # the store is away: nothing was sent, a retry may find it
        return c.fail(TRANSIENT, f"credential store unavailable: {exc}", False)
    except CredentialError as exc:  # a row that cannot be opened: an operator must look, never retried
        return c.fail(AUTH, f"{exc}: no usable credentials to call {adapter.provider!r}", False)
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
