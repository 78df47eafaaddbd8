"""The model simulator's own token counts per tenant and run: the ground truth budgets are judged by."""

from __future__ import annotations

import httpx

from infra.simulators.runner import running

AUTH = {"Authorization": "Bearer sim-model-token"}


def ask(url: str, run: str, tenant: str = "acme", model: str = "sim-small") -> dict:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "hello there"}],
        "metadata": {"keel_tenant": tenant, "keel_run": run, "keel_step": "s"},
    }
    answer = httpx.post(f"{url}/v1/chat/completions", json=body, headers=AUTH, trust_env=False)
    assert answer.status_code == 200, answer.text
    usage: dict = answer.json()["usage"]
    return usage


def test_usage_sums_the_tokens_served_per_model_for_a_run_or_a_tenant():
    with running("model") as url:
        a1, a2 = ask(url, "run-a"), ask(url, "run-a", model="sim-medium")
        b = ask(url, "run-b", tenant="other")
        got = httpx.get(f"{url}/_usage", params={"run": "run-a"}, trust_env=False).json()["by_model"]
        assert got == {
            "sim-small": {
                "calls": 1,
                "prompt_tokens": a1["prompt_tokens"],
                "completion_tokens": a1["completion_tokens"],
            },
            "sim-medium": {
                "calls": 1,
                "prompt_tokens": a2["prompt_tokens"],
                "completion_tokens": a2["completion_tokens"],
            },
        }
        other = httpx.get(f"{url}/_usage", params={"tenant": "other"}, trust_env=False).json()["by_model"]
        assert other == {
            "sim-small": {
                "calls": 1,
                "prompt_tokens": b["prompt_tokens"],
                "completion_tokens": b["completion_tokens"],
            }
        }
