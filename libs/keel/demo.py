"""The main job: the seed's worked example, made real. One email, however the network fails."""

from __future__ import annotations

import httpx

from keel.cli_runs import api, format_timeline, submit, wait
from keel.settings import Settings
from keel.stack import say

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
    print(
        f"\nrun {run['status']}; the email provider counted {delivered} "
        f"email{'s' if delivered != 1 else ''} delivered"
    )
    ok = run["status"] == "completed" and delivered == 1
    if not ok:
        say("demo FAILED: expected a completed run and exactly 1 email delivered")
    return 0 if ok else 1
