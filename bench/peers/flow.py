"""The outbound_email workflow's three calls, as a peer stack makes them: plain HTTP to the simulators.

The same requests Keel's executor and adapters make: a JSON draft from the model server, an activity
in the CRM, a send through the email provider, each with Keel's tool timeout (5 s). No Idempotency-Key
unless asked for: that is how the seed's stack called its tools.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import httpx

TIMEOUT_S = float(os.environ.get("BENCH_TOOL_TIMEOUT_S", "5.0"))
MODEL_URL = os.environ.get("BENCH_MODEL_URL", "http://127.0.0.1:8703/v1")
CRM_URL = os.environ.get("BENCH_CRM_URL", "http://127.0.0.1:8702")
EMAIL_URL = os.environ.get("BENCH_EMAIL_URL", "http://127.0.0.1:8701")
USE_KEYS = os.environ.get("BENCH_PEER_IDEMPOTENCY_KEYS", "") == "1"

_client: httpx.Client | None = None


def client() -> httpx.Client:
    global _client
    if _client is None:  # one per process: worker pools fork after import
        _client = httpx.Client(timeout=TIMEOUT_S, trust_env=False)
    return _client


def mark(run_id: str, step: str | None, kind: str) -> list[Any]:
    return [run_id, step, kind, time.time()]


def _key(run_id: str, step: str) -> dict[str, str]:
    return {"Idempotency-Key": f"{run_id}|{step}"} if USE_KEYS else {}


def draft(lead: dict[str, str]) -> dict[str, str]:
    prompt = f"Write a short outbound email to {lead['lead_name']} about {lead['product']}."
    reply = client().post(
        f"{MODEL_URL.rstrip('/')}/chat/completions",
        json={
            "model": "sim-small",
            "messages": [{"role": "user", "content": prompt}],
            "response_format": {"type": "json_object"},
        },
        headers={"Authorization": "Bearer sim-model-token"},
    )
    reply.raise_for_status()
    content = json.loads(reply.json()["choices"][0]["message"]["content"])
    return {"subject": str(content["subject"]), "body": str(content["body"])}


def log_to_crm(run_id: str, lead: dict[str, str], drafted: dict[str, str]) -> str:
    reply = client().post(
        f"{CRM_URL}/v1/activities",
        json={"contact_email": lead["lead_email"], "kind": "email_drafted", "note": drafted["subject"]},
        headers={"Authorization": "Bearer sim-crm-token", **_key(run_id, "log_to_crm")},
    )
    reply.raise_for_status()
    return str(reply.json()["activity_id"])


def send_email(run_id: str, lead: dict[str, str], drafted: dict[str, str]) -> str:
    reply = client().post(
        f"{EMAIL_URL}/v1/messages",
        json={"to": lead["lead_email"], "subject": drafted["subject"], "body": drafted["body"]},
        headers={"Authorization": "Bearer sim-email-token", **_key(run_id, "send_email")},
    )
    reply.raise_for_status()
    return str(reply.json()["message_id"])


# Retried like Keel's send_email step: up to 5 attempts, exponential backoff from 200 ms.
MAX_ATTEMPTS = 5


def backoff_s(retries: int) -> float:
    return float(min(5.0, 0.2 * 2**retries))
