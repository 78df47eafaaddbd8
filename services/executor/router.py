"""The model router: OpenAI-compatible chat completions with per-model routes, route classes, tenant
allow-lists, fallbacks by failure class, and pricing."""

from __future__ import annotations

import math
import time
from email.utils import parsedate_to_datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from keel.breaker import BreakerRegistry, Rejection, Transition
from keel.completion import Drift, message_of, parse_json_object, usage_of
from keel.events import now_ms
from keel.pricing import cost_decimal, decimal_to_micros, price_of
from keel.routing import NoAllowedModel, RoutePlan, plan
from keel.vocab import AUTH, RATE_LIMITED, TRANSIENT, VALIDATION

# The classes of keel.vocab.FailureClass a model call can have: it has no side effect, so it never has an
# unknown outcome; budget trips happen elsewhere.
ModelFailureClass = Literal["transient", "rate_limited", "validation", "auth"]
_FALL_BACK_ON = (TRANSIENT, RATE_LIMITED)
DEFAULT_MAX_TOKENS = 1024  # per call, when the step names none


class Route(BaseModel):
    """Where one model is served. Unset fields fall back to KEEL_MODEL_URL / KEEL_MODEL_API_KEY."""

    url: str | None = None
    api_key: SecretStr | None = None
    model: str | None = None  # the name the provider knows it by, when it differs from ours
    provider: str | None = None  # a label for events and cost reports; defaults to the URL's host
    fallbacks: list[str] = Field(default_factory=list)  # tried in order on 429, 5xx or no connection


class RouterSettings(BaseSettings):
    """Defaults point at the local model simulator."""

    model_config = SettingsConfigDict(env_prefix="KEEL_", extra="ignore")

    model_url: str = "http://127.0.0.1:8703/v1"
    model_api_key: SecretStr = SecretStr("sim-model-token")
    model_routes: dict[str, Route] = Field(default_factory=dict)  # KEEL_MODEL_ROUTES, JSON
    # KEEL_MODEL_ROUTE_CLASSES, JSON: route class (extraction, planning, code, write, ...) -> the models
    # that serve it, in order; a step naming a configured class goes there, whatever model it names.
    model_route_classes: dict[str, list[str]] = Field(default_factory=dict)
    # KEEL_TENANT_MODELS, JSON: tenant -> the models it may use; a model outside it is never called for
    # that tenant. A tenant not listed may use any model.
    tenant_models: dict[str, list[str]] = Field(default_factory=dict)
    model_timeout_s: float = Field(default=30.0, gt=0)
    # KEEL_MODEL_METADATA: send the effect's tags (keel_tenant, keel_run, keel_step, keel_call) as the
    # request's `metadata`, so the provider's own logs say which step asked. Off for providers that
    # refuse the field (some accept it only with stored completions).
    model_metadata: bool = True

    def route(self, model: str) -> Route:
        return self.model_routes.get(model) or Route()

    def plan(self, model: str, route_class: str | None, tenant: str | None) -> RoutePlan:
        fallbacks = {name: route.fallbacks for name, route in self.model_routes.items()}
        return plan(model, route_class, fallbacks, self.model_route_classes, tenant, self.tenant_models)


class ModelRequest(BaseModel):
    model_config = ConfigDict(frozen=True)

    model: str = Field(min_length=1)
    messages: list[dict[str, Any]] = Field(min_length=1)
    # "json": a JSON object, parsed here (llm steps); a dict: a JSON Schema sent as `json_schema`, the
    # answer handed back unparsed (an agent's final answer is checked, and may be refused, by its step).
    response_format: Literal["json", "text"] | dict[str, Any] = "text"
    tools: list[dict[str, Any]] | None = None  # OpenAI `tools` entries: the model may answer with calls
    metadata: dict[str, str] | None = None  # the effect's tags, sent unless KEEL_MODEL_METADATA is off
    max_tokens: int = Field(default=DEFAULT_MAX_TOKENS, gt=0)
    temperature: float = Field(default=0.0, ge=0)
    # Epoch ms after which an answer is of no use (the step's attempt counts as lost): no call starts
    # after it and none waits past it, so a lost attempt is never paid for beside its retry.
    deadline_ms: int | None = None
    route_class: str | None = None  # the step's kind of work: picks the models (KEEL_MODEL_ROUTE_CLASSES)
    tenant: str | None = None  # whose call: its allow-list (KEEL_TENANT_MODELS) bounds the models


class ModelResponse(BaseModel):
    model_config = ConfigDict(frozen=True)

    content: str | None  # the message's text; None when it holds tool calls only
    parsed: dict[str, Any] | None  # the JSON object, for response_format "json"
    # The assistant message, normalised (keel/completion.py): role, content, tool_calls.
    # Left out, it is the text answer `content` (how a fake router in a test answers).
    message: dict[str, Any] = Field(default_factory=dict)
    model: str  # the model that answered (a fallback, if the requested one failed)
    provider: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float  # display only
    cost_micros: int  # the exact cost in integer micro-dollars, from the tokens: what sums and budgets use
    latency_ms: int  # the whole call, fallbacks included
    attempts: list[tuple[str, ModelFailureClass]] = Field(default_factory=list)  # failures before this answer
    transitions: list[Transition] = Field(default_factory=list)  # circuit breaker state changes on the way
    cached_tokens: int = 0  # of prompt_tokens, read from the provider's cache (priced lower where it is)
    route_reason: str = ""  # why this model answered: its route class or the step's model, fallbacks

    @model_validator(mode="after")
    def _message_of_text(self) -> ModelResponse:
        if not self.message:
            object.__setattr__(self, "message", {"role": "assistant", "content": self.content})
        return self


class ModelError(Exception):
    """No usable answer. `attempts` holds every model tried and why it failed, in order."""

    def __init__(
        self,
        failure_class: ModelFailureClass,
        message: str,
        retry_after_ms: int | None = None,
        attempts: list[tuple[str, ModelFailureClass]] | None = None,
    ) -> None:
        super().__init__(message)
        self.failure_class = failure_class
        self.message = message
        self.retry_after_ms = retry_after_ms
        self.attempts = attempts or []
        self.transitions: list[Transition] = []
        self.cost_usd = 0.0  # spend of an answer that came back unusable: budgets still count it
        self.cost_micros: int | None = None  # the same, exact


def _classify(status: int) -> ModelFailureClass:
    # Same table as the tool adapters' classify_http, minus the classes a model call cannot have.
    if status == 429:
        return RATE_LIMITED
    if status in (401, 403):
        return AUTH
    return TRANSIENT if status == 408 or status >= 500 else VALIDATION


def _retry_after_ms(value: str | None) -> int | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, IndexError):
            return None
    return max(0, math.ceil(seconds * 1000)) if math.isfinite(seconds) else None


class ModelRouter:
    def __init__(
        self, settings: RouterSettings, http: httpx.Client, breakers: BreakerRegistry | None = None
    ) -> None:
        self.settings, self.http = settings, http
        # One breaker per model route: a storm of failures stops calls to it and moves to fallbacks.
        self.breakers = breakers or BreakerRegistry()

    def complete(self, req: ModelRequest) -> ModelResponse:
        """The first usable answer from the requested model or its fallbacks; raises ModelError."""
        started = time.monotonic()
        try:
            route = self.settings.plan(req.model, req.route_class, req.tenant)
        except NoAllowedModel as exc:  # a model the tenant may not use is never called
            raise ModelError(AUTH, str(exc), attempts=[(req.model, AUTH)]) from None
        chain = route.models
        for model in chain:
            price_of(model)  # an unpriced model is never called: its spend could not be counted
        attempts: list[tuple[str, ModelFailureClass]] = []
        transitions: list[Transition] = []
        for model in chain:
            try:
                if req.deadline_ms is not None and now_ms() >= req.deadline_ms:
                    raise ModelError(TRANSIENT, f"{model}: not called: the attempt's deadline has passed")
                reply = self._guarded_call(model, req, transitions)
            except ModelError as exc:
                attempts.append((model, exc.failure_class))
                exc.attempts, exc.transitions = list(attempts), transitions
                if exc.failure_class not in _FALL_BACK_ON or model == chain[-1]:
                    raise
                continue
            latency = round((time.monotonic() - started) * 1000)
            update = {
                "latency_ms": latency,
                "attempts": attempts,
                "transitions": transitions,
                "route_reason": route.why(model),
            }
            return reply.model_copy(update=update)
        raise AssertionError("unreachable: the chain is never empty")

    def _guarded_call(self, model: str, req: ModelRequest, transitions: list[Transition]) -> ModelResponse:
        breaker = self.breakers.get(f"model:{model}")
        permit = breaker.before_call(now_ms())
        if isinstance(permit, Rejection):
            raise ModelError(RATE_LIMITED, f"{model}: circuit open, not called", permit.retry_after_ms)
        if permit.transition:
            transitions.append(permit.transition)
        try:
            reply = self._call(model, req)
        except ModelError as exc:
            transitions += breaker.record(permit, False, exc.failure_class, now_ms())
            raise
        transitions += breaker.record(permit, True, None, now_ms())
        return reply

    def _timeout_s(self, req: ModelRequest) -> float:
        if req.deadline_ms is None:
            return self.settings.model_timeout_s
        return max(0.001, min(self.settings.model_timeout_s, (req.deadline_ms - now_ms()) / 1000))

    def _call(self, model: str, req: ModelRequest) -> ModelResponse:
        route = self.settings.route(model)
        url = (route.url or self.settings.model_url).rstrip("/") + "/chat/completions"
        key = (route.api_key or self.settings.model_api_key).get_secret_value()
        body: dict[str, Any] = {
            "model": route.model or model,
            "messages": req.messages,
            "max_tokens": req.max_tokens,
            "temperature": req.temperature,
        }
        if req.response_format == "json":
            body["response_format"] = {"type": "json_object"}
        elif isinstance(req.response_format, dict):
            schema = {"name": "final_answer", "schema": req.response_format}
            body["response_format"] = {"type": "json_schema", "json_schema": schema}
        if req.tools:
            body["tools"] = req.tools
        if req.metadata and self.settings.model_metadata:
            body["metadata"] = req.metadata
        try:
            response = self.http.post(
                url,
                json=body,
                headers={"Authorization": f"Bearer {key}"},
                timeout=self._timeout_s(req),
            )
        except httpx.HTTPError as exc:
            # Any transport failure, timeouts included, is transient: repeating a completion has no effect.
            raise ModelError(TRANSIENT, f"{model}: {type(exc).__name__}: {exc}") from exc
        if not response.is_success:
            raise ModelError(
                _classify(response.status_code),
                f"{model}: HTTP {response.status_code}: {response.text[:200]}",
                _retry_after_ms(response.headers.get("retry-after")),
            )
        try:
            doc = response.json()
            prompt_tokens, completion_tokens = usage_of(doc)
        except (ValueError, Drift) as exc:
            raise ModelError(VALIDATION, f"{model}: {_drift(exc)}") from exc
        cached = _cached_tokens(doc)
        exact = cost_decimal(model, prompt_tokens, completion_tokens, cached_tokens=cached)
        cost, micros = float(exact), decimal_to_micros(exact)
        try:  # an answer that drifted was still paid for: budgets count it
            message = message_of(doc, bool(req.tools))
            parsed = parse_json_object(message["content"]) if req.response_format == "json" else None
        except Drift as exc:
            error = ModelError(VALIDATION, f"{model}: {exc}")
            error.cost_usd, error.cost_micros = cost, micros
            raise error from exc
        return ModelResponse(
            content=message["content"],
            parsed=parsed,
            message=message,
            model=model,
            provider=route.provider or urlsplit(url).netloc,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost_usd=cost,
            cost_micros=micros,
            cached_tokens=cached,
            latency_ms=0,
        )


def _cached_tokens(doc: Any) -> int:
    """OpenAI's usage.prompt_tokens_details.cached_tokens (part of prompt_tokens); 0 when absent or odd:
    pricing them as uncached only over-counts."""
    try:
        cached = int(doc["usage"]["prompt_tokens_details"]["cached_tokens"] or 0)
    except (KeyError, TypeError, ValueError):
        return 0
    return cached if cached >= 0 else 0


def _drift(exc: Exception) -> str:
    return str(exc) if isinstance(exc, Drift) else f"malformed completion ({type(exc).__name__}: {exc})"
