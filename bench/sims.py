"""The provider simulators as the bench uses them: reset, faults, and the delivered records (ground truth)."""

from __future__ import annotations

from typing import Any

import httpx

from bench import stats

EMAIL_TOKEN = "sim-email-token"  # the simulator's default token (KEEL_SIM_EMAIL_TOKENS)


def timeout_rules(count: int, every: int, hang_ms: int) -> list[dict[str, Any]]:
    """Accept-then-timeout on one send in `every`: rule i skips the sends before the (i+1)*every-th.
    (Every rule still skipping counts each matching request, so `after` counts from the start.)"""
    return [
        {"kind": "accept_then_timeout", "ms": hang_ms, "after": (i + 1) * every - 1, "times": 1}
        for i in range(count // every)
    ]


class Simulators:
    def __init__(self, email_url: str, crm_url: str, model_url: str) -> None:
        model = model_url.rstrip("/").removesuffix("/v1")  # control endpoints sit beside the API
        self.urls = {"email": email_url.rstrip("/"), "crm": crm_url.rstrip("/"), "model": model}
        self.http = httpx.Client(timeout=30, trust_env=False)

    def reset(self) -> None:
        for url in self.urls.values():
            self.http.post(f"{url}/_reset").raise_for_status()

    def timeouts_on_email(self, sends: int, every: int, hang_ms: int) -> int:
        rules = timeout_rules(sends, every, hang_ms)
        if rules:
            self.http.post(f"{self.urls['email']}/_faults", json=rules).raise_for_status()
        return len(rules)

    def email_stats(self) -> dict[str, Any]:
        reply = self.http.get(f"{self.urls['email']}/_stats")
        reply.raise_for_status()
        return dict(reply.json())

    def email_duplicates(self, run_prefix: str) -> dict[str, Any]:
        """Sends beyond the first per run, from the provider's own records, for runs of `run_prefix`;
        with the provider's /_stats beside it (deliveries, and faults that fired)."""
        reply = self.http.get(
            f"{self.urls['email']}/v1/messages", headers={"Authorization": f"Bearer {EMAIL_TOKEN}"}
        )
        reply.raise_for_status()
        tos = [r["to"] for r in reply.json()["data"] if str(r.get("to", "")).startswith(run_prefix)]
        st = self.email_stats()
        return {
            **stats.duplicates(tos),
            "provider_deliveries": st["deliveries"],
            "faults_fired": st["faults_fired"],
        }
