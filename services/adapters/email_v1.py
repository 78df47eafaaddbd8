"""email@1: send one message through the email provider, deduplicated by its Idempotency-Key header."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from keel.vocab import PROVIDER_KEY
from services.adapters.base import Adapter, Effect, HttpCall, email_address


class EmailInput(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    to: Annotated[str, email_address()]
    subject: str = Field(min_length=1)
    body: str


class EmailOutput(BaseModel):
    model_config = ConfigDict(frozen=True)

    message_id: str = Field(min_length=1)
    status: str
    to: str


class EmailV1(Adapter[EmailInput, EmailOutput]):
    name = "email"
    version = 1
    idempotency_mode = PROVIDER_KEY
    Input = EmailInput
    Output = EmailOutput

    def request(self, payload: EmailInput, idempotency_key: str, effect: Effect) -> HttpCall:
        body = self.tagged(payload.model_dump(mode="json"), effect)
        return HttpCall("POST", "/v1/messages", body, self.key_headers(idempotency_key))

    def external_id(self, output: EmailOutput) -> str:
        return output.message_id
