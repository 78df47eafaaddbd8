"""A tool call goes out with its own tenant's credential from the encrypted store, and nobody else's.

The ground truth is the provider: the email simulator accepts only acme's token, so a call made with any
other tenant's token (or the shared one) is refused there and delivers nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from credstore_db import CredDb, credential_db, keyring, new_key

from infra.simulators.dedup import effect_id
from infra.simulators.runner import running
from keel.idempotency import idempotency_key
from services.adapters import AdapterSettings, call_tool, get_adapter
from services.adapters import config as adapter_config
from services.adapters.base import Effect, ToolRequest

pytestmark = pytest.mark.integration
KEY = new_key()
MESSAGE = {"to": "ada@example.com", "subject": "Hello", "body": "First draft"}


@pytest.fixture
def cdb(stack) -> Iterator[CredDb]:
    yield from credential_db(stack)


@pytest.fixture
def email_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("KEEL_SIM_EMAIL_TOKENS", "acme-email-token")
    with running("email") as url:
        yield url


@pytest.fixture
def from_the_store(cdb: CredDb, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The adapters configured as a deployment would: KEEL_CREDENTIALS=postgres and a key."""
    monkeypatch.setenv("KEEL_CREDENTIALS", "postgres")
    monkeypatch.setenv("KEEL_CREDENTIAL_KEYS", json.dumps({"k1": KEY}))
    monkeypatch.setenv("KEEL_CREDENTIAL_KEY_ID", "k1")
    monkeypatch.setenv("DATABASE_URL", cdb.url)
    adapter_config._store_choice.cache_clear()
    adapter_config._configured_store.cache_clear()
    yield
    adapter_config._store_choice.cache_clear()
    adapter_config._configured_store.cache_clear()


def send(settings: AdapterSettings, http: httpx.Client, tenant: str) -> object:
    key = idempotency_key(tenant, "outreach", f"run-{tenant}", "send", MESSAGE)
    request = ToolRequest(MESSAGE, key, Effect(tenant, f"run-{tenant}", "send"), None)
    return call_tool(get_adapter("email@1"), request, settings, http)


def test_each_tenants_call_carries_its_own_credential_from_the_encrypted_store(
    cdb: CredDb, email_url: str, from_the_store: None
) -> None:
    store = cdb.store(keyring({"k1": KEY}, "k1"))
    store.put("acme", "email", "acme-email-token")
    store.put("globex", "email", "globex-email-token")
    settings = AdapterSettings(email_url=email_url, tool_timeout_s=2.0)
    with httpx.Client(trust_env=False) as http, httpx.Client(base_url=email_url) as control:
        control.post("/_reset").raise_for_status()
        acme = send(settings, http, "acme")
        globex = send(settings, http, "globex")  # its own token: the provider refuses it
        initech = send(settings, http, "initech")  # no credential at all: nothing is sent
        stats = control.get("/_stats").json()
    assert acme.ok, acme  # type: ignore[attr-defined]
    assert globex.failure_class == "auth" and globex.request_sent  # type: ignore[attr-defined]
    assert initech.failure_class == "auth" and not initech.request_sent  # type: ignore[attr-defined]
    assert "initech" in (initech.error or "")  # type: ignore[attr-defined]
    # Ground truth: one delivery, acme's; globex's call never borrowed acme's token.
    assert stats["deliveries"] == 1
    assert set(stats["by_effect"]) == {effect_id("acme", "run-acme", "send")}
