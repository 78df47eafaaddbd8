"""Simulated helpdesk: customers and refunds at a ticketing provider WITHOUT Idempotency-Key support.

It never deduplicates (its only dedup mode is `none`, KEEL_SIM_HELPDESK_DEDUP) and never answers 409:
every accepted POST /v1/refunds is a new refund. The `X-Client-Reference` header is kept on the record
as a plain client reference, and GET /v1/refunds?client_reference=K finds the first refund written under
it, so Keel's `lookup` mode, alone, is what keeps a retried refund from being made twice. Deliveries are
counted per logical effect from the body's `metadata`, like the other providers.

Serves tools/lookup_customer.v1.yaml and tools/refund_charge.v1.yaml.
"""

from __future__ import annotations

import hashlib

from fastapi import FastAPI, Header
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from infra.simulators.common import Created, Json, Simulator, make_app, new_id, not_found, now_iso
from infra.simulators.dedup import effect_of

PLANS = ("free", "team", "business")


class CreateRefund(BaseModel):
    charge_id: str = Field(min_length=1)
    amount_cents: int = Field(ge=1)
    reason: str | None = None
    customer_id: str | None = None
    # Caller-defined tags, kept on the record; keel_tenant/keel_run/keel_step name the logical effect.
    metadata: dict[str, str] | None = None


def _hash(email: str) -> str:
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()[:16]


def customer(email: str) -> Json:
    """The customer behind an email: derived from it alone, so every run and replay sees the same one.
    The charge and the customer share the hash, so a refund's customer follows from its charge."""
    h = _hash(email)
    local = email.split("@", 1)[0]
    name = " ".join(part.capitalize() for part in local.replace("_", ".").split(".") if part) or local
    return {
        "customer_id": f"cus_{h}",
        "email": email,
        "name": name,
        "charge_id": f"ch_{h}",
        "plan": PLANS[int(h, 16) % len(PLANS)],
    }


def customer_of_charge(charge_id: str) -> str | None:
    return f"cus_{charge_id.removeprefix('ch_')}" if charge_id.startswith("ch_") else None


def create_app() -> FastAPI:
    sim = Simulator(
        "helpdesk",
        write_path="/v1/refunds",
        token_env="KEEL_SIM_HELPDESK_TOKENS",
        default_token="sim-helpdesk-token",
        modes=("none",),
        echo_key=False,
    )
    app = make_app(sim)

    @app.get("/v1/customers", response_model=None)
    def find_customer(email: str) -> Json | JSONResponse:
        # A read: never a delivery (only `requests` counts it).
        return customer(email) if "@" in email else not_found("customer with email", email)

    @app.post("/v1/refunds")
    def create_refund(refund: CreateRefund, x_client_reference: str | None = Header(None)) -> JSONResponse:
        def create() -> Created:
            refund_id = new_id("re")
            response = {
                "refund_id": refund_id,
                "charge_id": refund.charge_id,
                "amount_cents": refund.amount_cents,
                "status": "succeeded",
                "customer_id": refund.customer_id or customer_of_charge(refund.charge_id),
            }
            record = {
                **response,
                "reason": refund.reason,
                "client_reference": x_client_reference,
                "metadata": refund.metadata,
                "created_at": now_iso(),
            }
            return refund_id, record, response

        # The client reference is the key the records are searched by; the mode (`none`) never dedups.
        return sim.write(x_client_reference, refund, create, effect_of(refund.metadata))

    @app.get("/v1/refunds/{refund_id}", response_model=None)
    def get_refund(refund_id: str) -> Json | JSONResponse:
        return sim.find(refund_id) or not_found("refund", refund_id)

    @app.get("/v1/refunds", response_model=None)
    def find_refunds(client_reference: str | None = None) -> Json | JSONResponse:
        # The `lookup` mode: "was a refund already made under this reference?" Without one, list all.
        if client_reference is None:
            return {"data": sim.all_records()}
        return sim.find_by_key(client_reference) or not_found(
            "refund with client reference", client_reference
        )

    return app
