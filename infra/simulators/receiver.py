"""Simulated webhook receiver: records every delivery (by Keel-Event-Id, with headers and body) and
answers as its programmed faults say. It verifies nothing itself: tests check signatures and bodies.

POST /hook[/NAME] receives (one receiver serves several tenants, each on its own path). Faults are the
simulators' usual ones (infra/simulators/faults.py): `error` (a 5xx N times), `rate_limit` (429 with
Retry-After), `latency`, `accept_then_timeout`, `accept_then_error`; a rule without `path` applies to
POST /hook, `path: "/hook/NAME"` to one tenant's path. Control: GET /_stats, GET /_deliveries
[?event_id=ID], POST /_reset, GET|POST|DELETE /_faults.
"""

from __future__ import annotations

import asyncio
import threading
import time

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from infra.simulators.faults import FaultSchedule, Json, error_body, parse_rules

KINDS = frozenset({"latency", "rate_limit", "error", "accept_then_timeout", "accept_then_error"})
EVENT_ID = "keel-event-id"


class Receiver:
    """Every delivery, in arrival order, under one lock (handlers run on several threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._deliveries: list[Json] = []
            self._faults = FaultSchedule("/hook")
            self._fired: dict[str, int] = {}

    def receive(self, path: str, headers: dict[str, str], body: bytes) -> Json:
        """Record a delivery as it arrives; its answer is filled in by `answered`."""
        record: Json = {
            "path": path,
            "event_id": headers.get(EVENT_ID),
            "headers": headers,
            "body": body.decode("utf-8", errors="replace"),
            "received_at": time.time(),
            "status": None,
        }
        with self._lock:
            self._deliveries.append(record)
        return record

    def answered(self, record: Json, status: int) -> None:
        with self._lock:
            record["status"] = status

    def take_fault(self, path: str) -> tuple[str, Json] | None:
        with self._lock:
            rule = self._faults.take("POST", path)
            if rule is None:
                return None
            self._fired[rule.kind] = self._fired.get(rule.kind, 0) + 1
            return rule.kind, dict(rule.params)

    def program(self, raw: bytes) -> list[Json]:
        rules = parse_rules(raw, KINDS)
        with self._lock:
            self._faults.add(rules)
            return self._faults.describe()

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def pending(self) -> list[Json]:
        with self._lock:
            return self._faults.describe()

    def deliveries(self, event_id: str | None = None) -> list[Json]:
        with self._lock:
            return [dict(d) for d in self._deliveries if event_id is None or d["event_id"] == event_id]

    def stats(self) -> Json:
        with self._lock:
            by_event: dict[str, int] = {}
            ok: dict[str, int] = {}
            for d in self._deliveries:
                eid = d["event_id"] or ""
                by_event[eid] = by_event.get(eid, 0) + 1
                if d["status"] is not None and 200 <= d["status"] < 300:
                    ok[eid] = ok.get(eid, 0) + 1
            return {
                "deliveries": len(self._deliveries),
                "by_event": by_event,
                "succeeded": ok,
                "faults_fired": dict(self._fired),
            }


def create_app() -> FastAPI:
    sim = Receiver()
    app = FastAPI(title="keel-sim receiver", docs_url=None, redoc_url=None, openapi_url="/_openapi.json")

    async def deliver(request: Request) -> JSONResponse:
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        record = sim.receive(request.url.path, headers, body)
        fault = sim.take_fault(request.url.path)
        kind, params = fault if fault is not None else ("", {})
        if kind == "error":
            status, answer = params["status"], error_body("server_error", "injected fault")
            sim.answered(record, status)
            return JSONResponse(answer, status_code=status)
        if kind == "rate_limit":
            sim.answered(record, 429)
            refusal = error_body("rate_limit_error", "too many requests (injected fault)")
            return JSONResponse(refusal, status_code=429, headers={"Retry-After": str(params["retry_after"])})
        if kind == "latency":
            await asyncio.sleep(params["ms"] / 1000)
        # The delivery counts as received from here on (what accept_then_* faults hide from the sender).
        if kind == "accept_then_timeout":
            sim.answered(record, 200)
            await asyncio.sleep(params["ms"] / 1000)
            return JSONResponse({"received": True})
        if kind == "accept_then_error":
            sim.answered(record, 200)
            failed = error_body("server_error", "injected fault after receiving")
            return JSONResponse(failed, status_code=params["status"])
        sim.answered(record, 200)
        return JSONResponse({"received": True})

    app.add_api_route("/hook", deliver, methods=["POST"])
    app.add_api_route("/hook/{name:path}", deliver, methods=["POST"])

    @app.get("/_stats")
    def stats() -> Json:
        return sim.stats()

    @app.get("/_deliveries")
    def deliveries(event_id: str | None = None) -> Json:
        return {"deliveries": sim.deliveries(event_id)}

    @app.post("/_reset")
    def reset() -> Json:
        sim.reset()
        return {"reset": True}

    @app.get("/_faults")
    def list_faults() -> Json:
        return {"pending": sim.pending()}

    @app.post("/_faults")
    async def program_faults(request: Request) -> JSONResponse:
        try:
            pending = sim.program(await request.body())
        except ValueError as exc:
            return JSONResponse(error_body("invalid_fault", str(exc)), status_code=422)
        return JSONResponse({"pending": pending})

    @app.delete("/_faults")
    def clear_faults() -> Json:
        sim.clear_faults()
        return {"pending": []}

    return app
