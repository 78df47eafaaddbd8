"""Fault injection for the simulators: the rule format, the schedule that consumes it, and the effects."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from starlette.middleware.base import RequestResponseEndpoint

Json = dict[str, Any]

BASE_KINDS = frozenset(
    {"latency", "rate_limit", "error", "accept_then_timeout", "accept_then_error", "null_field", "auth"}
)
# A model's misbehaviour (infra/simulators/planner.py): each fault shapes the one reply it is consumed by.
MODEL_KINDS = frozenset({"loop", "unknown_tool", "bad_args", "malformed_args", "bad_answer"})
# Defaults per fault kind; a rule's params are merged over these.
_DEFAULT_PARAMS: dict[str, Json] = {
    "latency": {"ms": 100},
    "rate_limit": {"retry_after": 1},
    "error": {"status": 500},
    "accept_then_timeout": {"ms": 5000},
    "accept_then_error": {"status": 500},  # the effect happens, then the answer is a 5xx
    "null_field": {},
    "auth": {},
    "loop": {},
    "unknown_tool": {"name": "delete_all_customers"},  # the tool the model calls, never one it was offered
    "bad_args": {},
    "malformed_args": {},
    "bad_answer": {},
}


def error_body(kind: str, message: str) -> Json:
    return {"error": {"type": kind, "message": message}}


def unauthorised(message: str) -> JSONResponse:
    body = error_body("authentication_error", message)
    return JSONResponse(body, status_code=401, headers={"WWW-Authenticate": "Bearer"})


class FaultRule(BaseModel):
    """A programmed fault. Top-level fields other than the known ones are folded into `params`."""

    model_config = ConfigDict(extra="allow")

    kind: str
    times: int = Field(1, ge=1)
    path: str | None = None  # prefix filter; None means "POST on the main write endpoint"
    method: str | None = None
    after: int = Field(0, ge=0)
    params: Json = Field(default_factory=dict)


_RULES = TypeAdapter(list[FaultRule] | FaultRule)


def _normalise(rule: FaultRule, kinds: frozenset[str]) -> FaultRule:
    if rule.kind not in kinds:
        raise ValueError(f"unknown fault kind {rule.kind!r}; this simulator knows {sorted(kinds)}")
    params = {**_DEFAULT_PARAMS[rule.kind], **(rule.model_extra or {}), **rule.params}
    for name in ("ms", "retry_after"):
        if name in params and not (isinstance(params[name], int | float) and params[name] >= 0):
            raise ValueError(f"{rule.kind}: {name} must be a non-negative number")
    if rule.kind in ("error", "accept_then_error") and params["status"] not in (500, 502, 503):
        raise ValueError(f"{rule.kind}: status must be 500, 502 or 503")
    if rule.kind == "unknown_tool" and not (isinstance(params["name"], str) and params["name"]):
        raise ValueError("unknown_tool: params.name must be a non-empty tool name")
    if rule.kind == "null_field" and not isinstance(params.get("field"), str):
        raise ValueError("null_field: params.field (a dotted path such as 'message_id') is required")
    method = rule.method.upper() if rule.method else None
    return FaultRule(
        kind=rule.kind, times=rule.times, path=rule.path, method=method, after=rule.after, params=params
    )


def parse_rules(raw: bytes, kinds: frozenset[str]) -> list[FaultRule]:
    """One rule or a list of them, checked all together (raises ValueError) so a bad batch adds nothing."""
    parsed = _RULES.validate_json(raw)
    return [_normalise(rule, kinds) for rule in (parsed if isinstance(parsed, list) else [parsed])]


@dataclass
class _Pending:
    rule: FaultRule
    remaining: int
    to_skip: int

    def matches(self, method: str, path: str, write_path: str) -> bool:
        if self.rule.path is None:
            return method == "POST" and path == write_path
        return path.startswith(self.rule.path) and self.rule.method in (None, method)


class FaultSchedule:
    """Programmed rules, in order. Not locked itself: the owning Simulator serialises every call."""

    def __init__(self, write_path: str) -> None:
        self._write_path = write_path
        self._pending: list[_Pending] = []

    def add(self, rules: list[FaultRule]) -> None:
        self._pending.extend(_Pending(rule, rule.times, rule.after) for rule in rules)

    def clear(self) -> None:
        self._pending.clear()

    def describe(self) -> list[Json]:
        return [{**p.rule.model_dump(), "times": p.remaining, "after": p.to_skip} for p in self._pending]

    def take(self, method: str, path: str) -> FaultRule | None:
        """Consume one use of the first applicable rule. Every matching rule still skipping (`after`)
        counts this request, whether or not an earlier rule fires on it."""
        chosen: _Pending | None = None
        for pending in self._pending:
            if not pending.matches(method, path, self._write_path):
                continue
            if pending.to_skip:
                pending.to_skip -= 1
            elif chosen is None:
                chosen = pending
        if chosen is None:
            return None
        chosen.remaining -= 1
        if not chosen.remaining:
            self._pending.remove(chosen)
        return chosen.rule


def fault_of(request: Request) -> FaultRule | None:
    """The fault chosen for this request, for kinds the app itself acts on (the model's MODEL_KINDS)."""
    return getattr(request.state, "fault", None)


def _null_at(doc: Any, dotted: str) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        doc = doc[int(part)] if isinstance(doc, list) else doc[part]
    if isinstance(doc, list):
        doc[int(last)] = None
    else:
        doc[last] = None


async def apply_fault(rule: FaultRule, request: Request, call_next: RequestResponseEndpoint) -> Response:
    """Answer `request` as the fault dictates; kinds that need the handler's cooperation pass through."""
    params = rule.params
    request.state.fault = rule
    if rule.kind == "auth":
        return unauthorised("credentials revoked (injected fault)")
    if rule.kind == "rate_limit":
        refusal = error_body("rate_limit_error", "too many requests (injected fault)")
        return JSONResponse(refusal, status_code=429, headers={"Retry-After": str(params["retry_after"])})
    if rule.kind == "error":
        return JSONResponse(error_body("server_error", "injected fault"), status_code=params["status"])
    if rule.kind == "latency":
        await asyncio.sleep(params["ms"] / 1000)
        return await call_next(request)
    response = await call_next(request)
    # Reading the whole body means the handler has finished: the effect is delivered and recorded.
    body = b"".join([chunk async for chunk in response.body_iterator])  # type: ignore[attr-defined]
    if rule.kind == "accept_then_timeout":
        await asyncio.sleep(params["ms"] / 1000)
    elif rule.kind == "accept_then_error" and 200 <= response.status_code < 300:
        # The provider acted (the delivery is counted) and then failed to say so.
        failed = error_body("server_error", "injected fault after the effect")
        return JSONResponse(failed, status_code=params["status"])
    elif rule.kind == "null_field" and 200 <= response.status_code < 300:
        try:
            doc = json.loads(body)
            _null_at(doc, params["field"])
            body = json.dumps(doc).encode()
        except (KeyError, IndexError, ValueError, TypeError):
            pass  # the field is not in this response: nothing to drift
    headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
    return Response(body, status_code=response.status_code, headers=headers)
