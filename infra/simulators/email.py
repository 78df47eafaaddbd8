"""Simulated email provider: sends messages, deduplicated on Idempotency-Key as its mode says; with lookup."""

from __future__ import annotations

from fastapi import FastAPI, Header
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from infra.simulators.common import Created, Json, Simulator, make_app, new_id, not_found, now_iso
from infra.simulators.dedup import effect_of


class SendMessage(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    to: str = Field(min_length=1)
    subject: str
    body: str
    from_: str | None = Field(None, alias="from")
    # Caller-defined tags, kept on the record; keel_tenant/keel_run/keel_step name the logical effect.
    metadata: dict[str, str] | None = None


def create_app() -> FastAPI:
    sim = Simulator(
        "email", write_path="/v1/messages", token_env="KEEL_SIM_EMAIL_TOKENS", default_token="sim-email-token"
    )
    app = make_app(sim)

    @app.post("/v1/messages")
    def send(message: SendMessage, idempotency_key: str | None = Header(None)) -> JSONResponse:
        def create() -> Created:
            message_id = new_id("msg")
            record = {
                "message_id": message_id,
                "status": "accepted",
                "to": message.to,
                "from": message.from_,
                "subject": message.subject,
                "body": message.body,
                "metadata": message.metadata,
                "created_at": now_iso(),
            }
            return message_id, record, {"message_id": message_id, "status": "accepted", "to": message.to}

        return sim.write(idempotency_key, message, create, effect_of(message.metadata))

    @app.get("/v1/messages/{message_id}", response_model=None)
    def get_message(message_id: str) -> Json | JSONResponse:
        return sim.find(message_id) or not_found("message", message_id)

    @app.get("/v1/messages", response_model=None)
    def find_messages(idempotency_key: str | None = None) -> Json | JSONResponse:
        # The `lookup` mode: "did a send under this key already happen?" Without a key, list everything.
        if idempotency_key is None:
            return {"data": sim.all_records()}
        return sim.find_by_key(idempotency_key) or not_found("message with idempotency key", idempotency_key)

    return app
