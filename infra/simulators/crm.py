"""Simulated CRM: logs activities, deduplicated on Idempotency-Key as its mode says; with lookup."""

from __future__ import annotations

from fastapi import FastAPI, Header
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from infra.simulators.common import Created, Json, Simulator, make_app, new_id, not_found, now_iso
from infra.simulators.dedup import effect_of


class LogActivity(BaseModel):
    contact_email: str = Field(min_length=1)
    kind: str = Field(min_length=1)
    note: str = ""
    # Caller-defined tags, kept on the record; keel_tenant/keel_run/keel_step name the logical effect.
    metadata: dict[str, str] | None = None


def create_app() -> FastAPI:
    sim = Simulator(
        "crm", write_path="/v1/activities", token_env="KEEL_SIM_CRM_TOKENS", default_token="sim-crm-token"
    )
    app = make_app(sim)

    @app.post("/v1/activities")
    def log_activity(activity: LogActivity, idempotency_key: str | None = Header(None)) -> JSONResponse:
        def create() -> Created:
            activity_id = new_id("act")
            response = {
                "activity_id": activity_id,
                "contact_email": activity.contact_email,
                "kind": activity.kind,
                "created_at": now_iso(),
            }
            return activity_id, {**response, "note": activity.note, "metadata": activity.metadata}, response

        return sim.write(idempotency_key, activity, create, effect_of(activity.metadata))

    @app.get("/v1/activities/{activity_id}", response_model=None)
    def get_activity(activity_id: str) -> Json | JSONResponse:
        return sim.find(activity_id) or not_found("activity", activity_id)

    @app.get("/v1/activities", response_model=None)
    def find_activities(idempotency_key: str | None = None) -> Json | JSONResponse:
        # The `lookup` mode: "was this activity already logged?" Without a key, list everything.
        if idempotency_key is None:
            return {"data": sim.all_records()}
        return sim.find_by_key(idempotency_key) or not_found("activity with idempotency key", idempotency_key)

    return app
