"""Simulated payments provider (refunds): Stripe-like Idempotency-Key dedup as its mode says; with lookup.

Serves the example tool refund@1 (docs/examples/tools/refund.v1.yaml), a tool defined only as data."""

from __future__ import annotations

from fastapi import FastAPI, Header
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from infra.simulators.common import Created, Json, Simulator, make_app, new_id, not_found, now_iso
from infra.simulators.dedup import effect_of


class CreateRefund(BaseModel):
    charge_id: str = Field(min_length=1)
    amount_cents: int = Field(ge=1)
    reason: str | None = None
    # Caller-defined tags, kept on the record; keel_tenant/keel_run/keel_step name the logical effect.
    metadata: dict[str, str] | None = None


def create_app() -> FastAPI:
    sim = Simulator(
        "payments",
        write_path="/v1/refunds",
        token_env="KEEL_SIM_PAYMENTS_TOKENS",
        default_token="sim-payments-token",
    )
    app = make_app(sim)

    @app.post("/v1/refunds")
    def create_refund(refund: CreateRefund, idempotency_key: str | None = Header(None)) -> JSONResponse:
        def create() -> Created:
            refund_id = new_id("re")
            response = {
                "refund_id": refund_id,
                "charge_id": refund.charge_id,
                "amount_cents": refund.amount_cents,
                "status": "succeeded",
            }
            record = {
                **response,
                "reason": refund.reason,
                "metadata": refund.metadata,
                "created_at": now_iso(),
            }
            return refund_id, record, response

        return sim.write(idempotency_key, refund, create, effect_of(refund.metadata))

    @app.get("/v1/refunds/{refund_id}", response_model=None)
    def get_refund(refund_id: str) -> Json | JSONResponse:
        return sim.find(refund_id) or not_found("refund", refund_id)

    @app.get("/v1/refunds", response_model=None)
    def find_refunds(idempotency_key: str | None = None) -> Json | JSONResponse:
        if idempotency_key is None:
            return {"data": sim.all_records()}
        return sim.find_by_key(idempotency_key) or not_found("refund with idempotency key", idempotency_key)

    return app
