"""The model router: OpenAI-compatible chat completions with per-model routes, fallbacks and pricing."""

from __future__ import annotations

import json
import math
import time
from email.utils import parsedate_to_datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from keel.breaker import BreakerRegistry, Rejection, Transition
from keel.events import now_ms
from keel.vocab import AUTH, RATE_LIMITED, TRANSIENT, VALIDATION
from services.executor.pricing import cost_usd, price_of

# The classes of keel.vocab.FailureClass a model call can have: it has no side effect, so it never has an
# unknown outcome; budget trips happen elsewhere.
ModelFailureClass = Literal["transient", "rate_limited", "validation", "auth"]
_FALL_BACK_ON = (TRANSIENT, RATE_LIMITED)


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
    model_timeout_s: float = Field(default=30.0, gt=0)

    def route(self, model: str) -> Route:
        return self.model_routes.get(model) or Route()


class ModelRequest(BaseModel):
    model_config = ConfigDict(frozen=True)

    model: str = Field(min_length=1)
    messages: list[dict[str, Any]] = Field(min_length=1)
    response_format: Literal["json", "text"] = "text"
    max_tokens: int = Field(default=1024, gt=0)
    temperature: float = Field(default=0.0, ge=0)
    # Epoch ms after which an answer is of no use (the step's attempt counts as lost): no call starts
    # after it and none waits past it, so a lost attempt is never paid for beside its retry.
    deadline_ms: int | None = None


class ModelResponse(BaseModel):
    model_config = ConfigDict(frozen=True)

    content: str
    parsed: dict[str, Any] | None  # the JSON object, for response_format "json"
    model: str  # the model that answered (a fallback, if the requested one failed)
    provider: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_ms: int  # the whole call, fallbacks included
    attempts: list[tuple[str, ModelFailureClass]] = Field(default_factory=list)  # failures before this answer
    transitions: list[Transition] = Field(default_factory=list)  # circuit breaker state changes on the way


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


def _chain(settings: RouterSettings, model: str) -> list[str]:
    return list(dict.fromkeys([model, *settings.route(model).fallbacks]))  # ordered, without repeats


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
        chain = _chain(self.settings, req.model)
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
            return reply.model_copy(
                update={"latency_ms": latency, "attempts": attempts, "transitions": transitions}
            )
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
        content, prompt_tokens, completion_tokens = _read_completion(model, response)
        cost = cost_usd(model, prompt_tokens, completion_tokens)
        try:
            parsed = _parse_json(model, content) if req.response_format == "json" else None
        except ModelError as exc:
            exc.cost_usd = cost
            raise
        return ModelResponse(
            content=content,
            parsed=parsed,
            model=model,
            provider=route.provider or urlsplit(url).netloc,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost_usd=cost,
            latency_ms=0,
        )


def _read_completion(model: str, response: httpx.Response) -> tuple[str, int, int]:
    """Content and token usage of a chat completion; anything missing is drift (validation)."""
    try:
        doc = response.json()
        content = doc["choices"][0]["message"]["content"]
        usage = doc["usage"]
        prompt_tokens, completion_tokens = int(usage["prompt_tokens"]), int(usage["completion_tokens"])
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise ModelError(VALIDATION, f"{model}: malformed completion ({type(exc).__name__}: {exc})") from exc
    if not isinstance(content, str):
        raise ModelError(VALIDATION, f"{model}: completion has no text content")
    return content, prompt_tokens, completion_tokens


def _parse_json(model: str, content: str) -> dict[str, Any]:
    try:
        parsed = json.loads(content)
    except ValueError as exc:
        raise ModelError(VALIDATION, f"{model}: response is not valid JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise ModelError(VALIDATION, f"{model}: expected a JSON object, got {type(parsed).__name__}")
    return parsed
