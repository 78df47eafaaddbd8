"""issue_refund@1: a refund at the payments provider, as code in your own process (docs/workers.md).

Served by `keel-worker tests.workers.refunds`; its definition (tests/tools/issue_refund.v1.yaml) is what
`keel-worker tests.workers.refunds --print-definitions` prints."""

from __future__ import annotations

import os
from typing import Literal

import httpx
from pydantic import BaseModel, Field

from keel.worker import ToolContext, ToolError, tool

PAYMENTS_URL = os.environ.get("KEEL_PAYMENTS_URL", "http://127.0.0.1:8704")


class RefundIn(BaseModel):
    charge_id: str = Field(pattern=r"^ch_[A-Za-z0-9]+$")
    amount_cents: int = Field(ge=1)
    reason: Literal["duplicate", "fraudulent", "requested_by_customer"] | None = None


class RefundOut(BaseModel):
    refund_id: str = Field(min_length=1)  # the provider's id of the effect: what the ledger commits
    charge_id: str
    amount_cents: int
    status: Literal["pending", "succeeded", "failed"]


def payments(ctx: ToolContext) -> httpx.Client:
    """The provider's client: the run's tenant's token, and no longer than Keel allows a call to take."""
    token = ctx.credentials("payments")  # the run's tenant's secret only
    return httpx.Client(
        base_url=PAYMENTS_URL,
        headers={"Authorization": f"Bearer {token}"},
        timeout=ctx.timeout_s,
        trust_env=False,
    )


@tool(
    "issue_refund@1",
    idempotency="lookup",
    input=RefundIn,
    output=RefundOut,
    side_effects=True,
    worker="payments",  # its commands go to keel.tool-commands.payments
    external_id="refund_id",
)
def issue_refund(data: RefundIn, ctx: ToolContext) -> RefundOut:
    """Refund part or all of a card charge. Use only when a refund was approved; amount in cents."""
    body = {**data.model_dump(exclude_none=True), "metadata": ctx.metadata}
    try:
        with payments(ctx) as http:
            answer = http.post("/v1/refunds", json=body, headers={"Idempotency-Key": ctx.idempotency_key})
    except httpx.ConnectError as exc:  # never reached the provider: safe to retry
        raise ToolError(f"payments unreachable: {exc}", "transient") from exc
    # A timeout after sending is not caught: an unexpected exception is an unknown outcome, and the
    # lookup below decides the retry.
    if answer.status_code == 429:
        raise ToolError("payments: rate limited", "rate_limited")
    if answer.status_code in (401, 403):
        raise ToolError(f"payments refused our token: {answer.text}", "auth")
    if answer.status_code >= 500:
        raise ToolError(f"payments: HTTP {answer.status_code}", "transient")  # the lookup guards the retry
    if answer.status_code >= 400:
        raise ToolError(f"payments refused the refund: {answer.text}", "validation")
    return RefundOut.model_validate(answer.json())


@issue_refund.lookup
def find_refund(data: RefundIn, ctx: ToolContext) -> RefundOut | None:
    """The refund made under this call's idempotency key, if any: asked before every write."""
    with payments(ctx) as http:
        answer = http.get("/v1/refunds", params={"idempotency_key": ctx.idempotency_key})
    if answer.status_code == 404:
        return None
    answer.raise_for_status()  # could not ask: nothing was written, the attempt is retried
    return RefundOut.model_validate(answer.json())
