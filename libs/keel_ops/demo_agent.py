"""The agent demo: support_triage, whose refund provider refunds and then fails to say so.

An agent reads a ticket, looks the customer up, issues the refund and replies by email. The helpdesk
(the refund provider) has no Idempotency-Key support: it accepts the refund, then answers 500. A naive
retry would refund twice; Keel's `lookup` mode asks the helpdesk whether the refund under the call's key
already happened before sending again. The providers' own counts are the proof."""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx

from keel import vocab
from keel.settings import Settings
from keel_ops.cli_runs import api, console_line, format_timeline, submit, wait
from keel_ops.stack import say

TICKET = {
    "ticket_id": "T-1042",
    "customer_email": "ada@example.com",
    "amount_cents": 1500,
    "text": "I was charged twice for my May invoice. Please refund the duplicate 15.00.",
}


def _urls() -> dict[str, str]:
    from services.adapters.config import AdapterSettings
    from services.executor.router import RouterSettings

    tools = AdapterSettings()
    return {
        "helpdesk": tools.base_url("helpdesk", "http://127.0.0.1:8705"),
        "email": tools.base_url("email"),
        "crm": tools.base_url("crm"),
        "model": RouterSettings().model_url.removesuffix("/v1"),
    }


def _stats(url: str) -> dict[str, Any]:
    stats: dict[str, Any] = httpx.get(f"{url}/_stats", trust_env=False).json()
    return stats


def of_run(by_effect: dict[str, int], run_id: str) -> dict[str, int]:
    """A simulator's per-effect counts (tenant|run|step[|call]) for one run."""
    return {k: n for k, n in by_effect.items() if k.split("|")[1:2] == [run_id]}


def run_agent_demo(settings: Settings) -> int:
    urls = _urls()
    for url in urls.values():
        httpx.post(f"{url}/_reset", trust_env=False).raise_for_status()
    # The refund goes through, then the answer is lost in a 500: the double-refund setup.
    rule = {"kind": "accept_then_error", "status": 500, "path": "/v1/refunds", "method": "POST"}
    httpx.post(f"{urls['helpdesk']}/_faults", json=rule, trust_env=False).raise_for_status()
    say("injected on the helpdesk: refund the next request, then answer 500 (the helpdesk has no key dedup)")
    say("submitting support_triage: an agent looks the customer up, refunds, replies by email")
    run_id = submit(settings, "support_triage", {"ticket": TICKET})
    run = wait(settings, run_id)
    events = api(settings, "GET", f"/v1/runs/{run_id}/events")["events"]
    print(f"\ntimeline of {run_id}:")
    print(format_timeline(events))

    refunds = of_run(_stats(urls["helpdesk"])["by_effect"], run_id)
    emails = of_run(_stats(urls["email"])["by_effect"], run_id)
    turns = of_run(_stats(urls["model"])["by_effect"], run_id)
    asked = Counter(turns.values())
    print("\nthe providers' own counts for this run:")
    print(f"  helpdesk refunds delivered: {sum(refunds.values())}  {refunds}")
    print(f"  emails delivered:           {sum(emails.values())}  {emails}")
    print(
        f"  model turns asked:          {len(turns)} turns, asked {dict(sorted(asked.items()))} time(s) each"
    )
    cost = sum(float(e.get("cost_usd") or 0) for e in events if e["event"] == "model_called")
    print(f"  model spend:                ${cost:.6f}")
    print(f"run {run['status']}")
    print(console_line(settings, run_id))
    ok = (
        run["status"] == vocab.COMPLETED
        and sum(refunds.values()) == 1
        and sum(emails.values()) == 1
        and set(asked) == {1}
    )
    if not ok:
        say("demo FAILED: expected a completed run, exactly 1 refund and 1 email, and no turn asked twice")
    return 0 if ok else 1
