"""The main job: the seed's worked example, made real. One email, however the network fails."""

from __future__ import annotations

import httpx

from keel import vocab
from keel.settings import Settings
from keel_ops.cli_runs import api, console_line, format_timeline, submit, wait
from keel_ops.stack import say

LEAD = {"lead_email": "ada@example.com", "lead_name": "Ada Lovelace", "product": "Keel"}


def run_demo(settings: Settings) -> int:
    from services.adapters.config import AdapterSettings

    tools = AdapterSettings()
    email, crm = tools.base_url("email"), tools.base_url("crm")
    hang_ms = int(tools.tool_timeout_s * 1000) + 1500
    for url in (email, crm):
        httpx.post(f"{url}/_reset", trust_env=False).raise_for_status()
    # The provider accepts the next send, then hangs past the adapter's timeout: the triple-send setup.
    httpx.post(
        f"{email}/_faults", json={"kind": "accept_then_timeout", "ms": hang_ms}, trust_env=False
    ).raise_for_status()
    say(f"injected on the email provider: accept the next send, then time out ({hang_ms} ms)")
    say("submitting outbound_email: draft email (LLM) -> log to CRM -> send email")
    run_id = submit(settings, "outbound_email", LEAD)
    run = wait(settings, run_id)
    events = api(settings, "GET", f"/v1/runs/{run_id}/events")["events"]
    print(f"\ntimeline of {run_id}:")
    print(format_timeline(events))
    stats = httpx.get(f"{email}/_stats", trust_env=False).json()
    delivered = stats["deliveries"]
    send = next(s for s in run["steps"] if s["step"] == "send_email")
    key = next(e["idempotency_key"] for e in events if e["step"] == "send_email" and e["idempotency_key"])
    token = tools.credential("acme", "email")
    found = httpx.get(
        f"{email}/v1/messages",
        params={"idempotency_key": key},
        trust_env=False,
        headers={"Authorization": f"Bearer {token}"},
    )
    provider_id = found.json().get("message_id") if found.status_code == 200 else None
    same = "the same" if provider_id == send["external_id"] else "DIFFERENT"
    print(
        f"\nthe provider's message under the send's key: {provider_id}; "
        f"committed by the ledger: {send['external_id']} ({same})"
    )
    plural = "s" if delivered != 1 else ""
    print(f"run {run['status']}; the email provider counted {delivered} email{plural} delivered")
    print(console_line(settings, run_id))
    ok = run["status"] == vocab.COMPLETED and delivered == 1 and provider_id == send["external_id"]
    if not ok:
        say("demo FAILED: expected a completed run, exactly 1 email delivered, under the committed id")
    return 0 if ok else 1
