"""crm@1: log one activity on a CRM contact; the CRM can be asked whether a key was already used."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from keel.vocab import LOOKUP
from services.adapters.base import Adapter, Effect, HttpCall, email_address


class CrmActivityInput(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    contact_email: Annotated[str, email_address()]
    kind: str = Field(min_length=1)
    note: str = ""


class CrmActivityOutput(BaseModel):
    model_config = ConfigDict(frozen=True)

    activity_id: str = Field(min_length=1)
    contact_email: str
    kind: str
    created_at: str = Field(min_length=1)


class CrmV1(Adapter[CrmActivityInput, CrmActivityOutput]):
    name = "crm"
    version = 1
    # The CRM also honours Idempotency-Key, but lookup is the guarantee we rely on: it answers "did it
    # happen?" even when the key store expired or the first answer was lost.
    idempotency_mode = LOOKUP
    Input = CrmActivityInput
    Output = CrmActivityOutput

    def request(self, payload: CrmActivityInput, idempotency_key: str, effect: Effect) -> HttpCall:
        body = self.tagged(payload.model_dump(mode="json"), effect)
        return HttpCall("POST", "/v1/activities", body, self.key_headers(idempotency_key))

    def lookup_call(self, idempotency_key: str) -> HttpCall:
        return HttpCall("GET", "/v1/activities", params={"idempotency_key": idempotency_key})

    def external_id(self, output: CrmActivityOutput) -> str:
        return output.activity_id
