"""Shared core of the simulators: idempotency store, delivery counters, auth and the control API."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint

from infra.simulators.dedup import DEDUP_MODES, DedupMode, mode_from_env, parse_mode
from infra.simulators.faults import (
    BASE_KINDS,
    FaultRule,
    FaultSchedule,
    apply_fault,
    error_body,
    parse_rules,
    unauthorised,
)
from infra.simulators.faults import Json as Json  # re-exported: the apps' one JSON object type

# What a write endpoint's `create` callback returns: (resource id, stored record, response body).
Created = tuple[str, Json, Json]

# Control endpoints live under this prefix: never authenticated, counted or faulted, so tests can always
# observe the ground truth.
CONTROL_PREFIX = "/_"


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def not_found(what: str, ident: str) -> JSONResponse:
    return JSONResponse(error_body("not_found", f"no {what} {ident!r}"), status_code=404)


@dataclass(frozen=True)
class _Stored:
    fingerprint: str
    resource_id: str
    response: Json


class Simulator:
    """State of one simulated provider. Every read and write of it happens under one lock, because these
    counters are the ground truth for duplicate-delivery checks and handlers may run on several threads.

    Deliveries are counted whatever the dedup mode: in total, per idempotency key (`by_key`) and per
    logical effect named in the request's metadata (`by_effect`), so a second delivery of one effect shows
    up even when it came under no key or a new one.
    """

    def __init__(
        self,
        name: str,
        write_path: str,
        token_env: str,
        default_token: str,
        kinds: frozenset[str] = BASE_KINDS,
        modes: tuple[DedupMode, ...] = DEDUP_MODES,  # type: ignore[assignment]
        echo_key: bool = True,
    ) -> None:
        self.name = name
        self.write_path = write_path
        self.kinds = kinds
        raw = os.environ.get(token_env, default_token)
        self.tokens = frozenset(t.strip() for t in raw.split(",") if t.strip())
        # A provider without key support knows only `none`: no mode can make it dedup or answer 409.
        self.modes = modes
        self.start_mode = self._allowed(mode_from_env(name, "key" if "key" in modes else modes[0]))
        # Whether answers echo the key in an Idempotency-Key header (a provider that has no such header
        # never says it).
        self.echo_key = echo_key
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Forget every record, count and fault; the dedup mode goes back to the start-up one."""
        with self._lock:
            self.mode: DedupMode = self.start_mode
            self._records: dict[str, Json] = {}
            self._by_idem: dict[str, _Stored] = {}
            self._written_under: dict[str, list[str]] = {}  # key -> ids of records written under it
            self._in_flight: set[str] = set()
            self._faults = FaultSchedule(self.write_path)
            self._deliveries = self._requests = self._replays = self._refused_in_flight = 0
            self._without_effect = 0
            self._by_key: dict[str, int] = {}
            self._by_effect: dict[str, int] = {}
            self._fired: dict[str, int] = {}

    def stats(self) -> Json:
        with self._lock:
            return {
                "deliveries": self._deliveries,
                "requests": self._requests,
                "by_key": dict(self._by_key),
                "by_effect": dict(self._by_effect),
                "without_effect": self._without_effect,
                "replays": self._replays,
                "refused_in_flight": self._refused_in_flight,
                "faults_fired": dict(self._fired),
                "dedup": self.mode,
            }

    def _allowed(self, mode: DedupMode) -> DedupMode:
        if mode not in self.modes:
            raise ValueError(f"{self.name} supports dedup modes {list(self.modes)} only, not {mode!r}")
        return mode

    def set_mode(self, mode: object) -> DedupMode:
        with self._lock:
            self.mode = self._allowed(parse_mode(mode))
            return self.mode

    def authorised(self, header: str | None) -> bool:
        scheme, _, token = (header or "").partition(" ")
        return scheme.lower() == "bearer" and token.strip() in self.tokens

    def count_request(self) -> None:
        with self._lock:
            self._requests += 1

    # --- in-flight requests (the `stripe` mode) ------------------------------------------------------

    def begin(self, key: str) -> bool:
        """Mark a write under `key` as being processed; False (and counted) when one already is, in the
        `stripe` mode. In other modes concurrent requests are let through."""
        with self._lock:
            if self.mode != "stripe":
                return True
            if key in self._in_flight:
                self._refused_in_flight += 1
                return False
            self._in_flight.add(key)
            return True

    def end(self, key: str) -> None:
        with self._lock:
            self._in_flight.discard(key)

    # --- faults -------------------------------------------------------------------------------------

    def program(self, rules: list[FaultRule]) -> None:
        with self._lock:
            self._faults.add(rules)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def pending(self) -> list[Json]:
        with self._lock:
            return self._faults.describe()

    def take_fault(self, method: str, path: str) -> FaultRule | None:
        with self._lock:
            rule = self._faults.take(method, path)
            if rule is not None:
                self._fired[rule.kind] = self._fired.get(rule.kind, 0) + 1
            return rule

    # --- deliveries ---------------------------------------------------------------------------------

    def write(
        self, key: str | None, payload: BaseModel, create: Callable[[], Created], effect: str | None = None
    ) -> JSONResponse:
        """Deliver, deduplicating on the idempotency key as the mode says: in `key` and `stripe` a replay
        with the same payload gets the stored response and no second delivery, and the same key with
        another payload is refused; in `none` every call delivers. `effect` is the logical effect the
        request names (its metadata), counted on every delivery."""
        canonical = json.dumps(payload.model_dump(mode="json", by_alias=True), sort_keys=True)
        fingerprint = hashlib.sha256(canonical.encode()).hexdigest()
        key = key or None
        with self._lock:  # check and deliver atomically, or two concurrent sends could both deliver
            dedup = key is not None and self.mode != "none"
            stored = self._by_idem.get(key) if dedup and key else None
            if stored is not None and stored.fingerprint != fingerprint:
                message = "Idempotency-Key was already used with a different request body"
                return JSONResponse(error_body("idempotency_error", message), status_code=422)
            if stored is not None:
                self._replays += 1
                return JSONResponse(
                    stored.response, headers={"Idempotent-Replayed": "true", "Idempotency-Key": str(key)}
                )
            resource_id, record, response = create()
            self._records[resource_id] = {**record, "idempotency_key": key}
            self._deliveries += 1
            if effect is None:
                self._without_effect += 1
            else:
                self._by_effect[effect] = self._by_effect.get(effect, 0) + 1
            if key:
                self._written_under.setdefault(key, []).append(resource_id)
                self._by_key[key] = self._by_key.get(key, 0) + 1
            if dedup and key:
                self._by_idem[key] = _Stored(fingerprint, resource_id, response)
        return JSONResponse(response, headers={"Idempotency-Key": key} if key and self.echo_key else None)

    def find(self, resource_id: str) -> Json | None:
        with self._lock:
            record = self._records.get(resource_id)
            return dict(record) if record else None

    def find_by_key(self, key: str) -> Json | None:
        """The first record written under `key` (a search on the stored field: works in every mode)."""
        with self._lock:
            written = self._written_under.get(key)
            return dict(self._records[written[0]]) if written else None

    def all_records(self) -> list[Json]:
        with self._lock:
            return [dict(record) for record in self._records.values()]


def make_app(sim: Simulator) -> FastAPI:
    """A FastAPI app with auth, request counting, fault injection and the control endpoints wired in;
    the caller adds the provider's own routes."""
    app = FastAPI(title=f"keel-sim {sim.name}", docs_url=None, redoc_url=None, openapi_url="/_openapi.json")

    async def guard(request: Request, call_next: RequestResponseEndpoint) -> Response:
        if request.url.path.startswith(CONTROL_PREFIX):
            return await call_next(request)
        sim.count_request()
        # A bad token is refused before faults are consulted, so it never consumes a programmed fault.
        if not sim.authorised(request.headers.get("authorization")):
            return unauthorised("missing or invalid bearer token")
        key = request.headers.get("idempotency-key") or None
        is_write = request.method == "POST" and request.url.path == sim.write_path
        # Stripe's in-flight refusal: checked before faults, so a refused request consumes none. The key
        # stays in flight until the answer is complete, faults' delays included (an accept-then-timeout
        # request is still being processed when the impatient caller retries).
        if key and is_write and not sim.begin(key):
            message = "another request with this Idempotency-Key is still being processed; retry later"
            return JSONResponse(error_body("idempotency_key_in_use", message), status_code=409)
        try:
            rule = sim.take_fault(request.method, request.url.path)
            if rule is None:
                return await call_next(request)
            return await apply_fault(rule, request, call_next)
        finally:
            if key and is_write:
                sim.end(key)

    app.add_middleware(BaseHTTPMiddleware, dispatch=guard)

    @app.get("/_stats")
    def stats() -> Json:
        return sim.stats()

    @app.post("/_reset")
    def reset() -> Json:
        sim.reset()
        return {"reset": True}

    @app.get("/_mode")
    def get_mode() -> Json:
        return {"dedup": sim.mode}

    @app.post("/_mode")
    async def set_mode(request: Request) -> JSONResponse:
        try:
            body = json.loads(await request.body() or b"{}")
            mode = sim.set_mode(body.get("dedup") if isinstance(body, dict) else None)
        except ValueError as exc:
            return JSONResponse(error_body("invalid_mode", str(exc)), status_code=422)
        return JSONResponse({"dedup": mode})

    @app.get("/_faults")
    def list_faults() -> Json:
        return {"pending": sim.pending()}

    @app.post("/_faults")
    async def program_faults(request: Request) -> JSONResponse:
        try:
            sim.program(parse_rules(await request.body(), sim.kinds))
        except ValueError as exc:  # pydantic's ValidationError included
            return JSONResponse(error_body("invalid_fault", str(exc)), status_code=422)
        return JSONResponse({"pending": sim.pending()})

    @app.delete("/_faults")
    def clear_faults() -> Json:
        sim.clear_faults()
        return {"pending": []}

    return app
