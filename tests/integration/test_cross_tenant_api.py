"""The wrong tenant, over the API, against the real broker and database: as globex (an API key, and a
JWT bearer token), every read, write, cancel/pause/resume, re-run, replay, decision, approval, blob and
redrive path on acme's run and cases answers 404 (as if it did not exist) or 403 (a role globex does not
have), and nothing changed: acme's run reads the same, its case is still open, no control command for it
reached the control topic and no run request for it reached the run-requests topic (read back).
"""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
import test_api_cases
from apistack import ACME
from test_api_cases import Cases

pytestmark = pytest.mark.integration
cases = test_api_cases.cases  # the fixture: acme's held run, its cases, a control topic of its own
ISS, AUD, SECRET = "https://id.example.test", "keel-api", "cross-tenant-test-secret-of-40-characters"


@pytest.fixture
def tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    """The API also takes JWT bearer tokens signed with SECRET (set before the app is made)."""
    monkeypatch.setenv("KEEL_JWT_KEY", SECRET)
    monkeypatch.setenv("KEEL_JWT_ISSUER", ISS)
    monkeypatch.setenv("KEEL_JWT_AUDIENCE", AUD)


def globex_token() -> str:
    claims = {"iss": ISS, "aud": AUD, "sub": "mallory", "exp": int(time.time()) + 600}
    return jwt.encode({**claims, "tenant": "globex", "role": "submitter"}, SECRET, algorithm="HS256")


def attempts(c: Cases, ref: str) -> list[tuple[str, str, Any, set[int]]]:
    run, case, approval = c.held.run_id, c.case, c.approval_case
    reason = {"reason": "mine now"}
    bound = {"reason": "ok", "input_ref": "sha256:" + "3" * 64, "idempotency_key": "k"}
    return [
        ("GET", f"/v1/runs/{run}", None, {404}),
        ("GET", f"/v1/runs/{run}/events", None, {404}),
        ("GET", f"/v1/runs/{run}/blobs/{ref}", None, {404}),
        ("GET", f"/v1/runs/{run}/definitions", None, {404}),
        ("POST", f"/v1/runs/{run}/replay", {"step": "send_email"}, {404}),
        ("POST", f"/v1/runs/{run}/cancel", reason, {404}),
        ("POST", f"/v1/runs/{run}/pause", reason, {404}),
        ("POST", f"/v1/runs/{run}/resume", reason, {404}),
        ("POST", f"/v1/runs/{run}/rerun", {"from_step": "send_email"}, {404}),
        ("GET", f"/v1/quarantine/{case}", None, {404}),
        ("POST", f"/v1/quarantine/{case}/decide", {"decision": "fail", "reason": "x"}, {403}),
        ("GET", f"/v1/quarantine/{approval}", None, {404}),
        ("POST", f"/v1/approvals/{approval}/approve", bound, {404}),
        ("POST", f"/v1/approvals/{approval}/deny", reason, {404}),
        ("GET", "/v1/costs?tenant=acme", None, {403}),
        ("GET", "/v1/dead-letters", None, {403}),
        ("POST", "/v1/dead-letters/keel.dead-letters:0:0/redrive", None, {403}),
        ("POST", "/v1/dead-letters/redrive", None, {403}),
    ]


def acme_view(c: Cases) -> tuple[Any, ...]:
    run = c.client.get(f"/v1/runs/{c.held.run_id}", headers=ACME)
    events = c.client.get(f"/v1/runs/{c.held.run_id}/events", headers=ACME)
    case = c.client.get(f"/v1/quarantine/{c.case}", headers=ACME)
    approval = c.client.get(f"/v1/quarantine/{c.approval_case}", headers=ACME)
    assert {r.status_code for r in (run, events, case, approval)} == {200}
    return run.json(), events.json(), case.json(), approval.json()


@pytest.mark.parametrize("credential", ["key", "token"])
def test_globex_can_neither_read_nor_change_acme_runs_and_cases(tokens, cases, credential):
    c = cases
    globex = {"Authorization": f"Bearer {'globex-dev-key' if credential == 'key' else globex_token()}"}
    assert c.client.get("/v1/runs", headers=globex).status_code == 200  # the credential works
    before = acme_view(c)
    refs = [e["body"].get("input_ref") for e in before[1]["events"] if e["body"].get("input_ref")]
    ref = refs[0]  # a ref acme's run names: acme gets past the run (its blob is not stored here)
    own = c.client.get(f"/v1/runs/{c.held.run_id}/blobs/{ref}", headers=ACME).json()["error"]["code"]
    theirs = c.client.get(f"/v1/runs/{c.held.run_id}/blobs/{ref}", headers=globex).json()["error"]["code"]
    assert (own, theirs) == ("blob_missing", "run_not_found")
    wrong = []
    for method, path, body, expected in attempts(c, ref):
        reply = c.client.request(method, path, headers=globex, json=body)
        if reply.status_code not in expected:
            wrong.append(f"{method} {path}: {reply.status_code} {reply.text[:200]}")
        assert c.held.run_id not in reply.text or reply.status_code == 404, (path, reply.text)
    assert not wrong, "\n".join(wrong)
    # Globex's lists hold nothing of acme's, whatever it filters on.
    for path in ("/v1/runs", "/v1/quarantine?tenant=acme", "/v1/approvals?tenant=acme", "/v1/quarantine"):
        reply = c.client.get(path, headers=globex)
        assert reply.status_code == 200 and c.held.run_id not in reply.text, path
        assert c.approval.run_id not in reply.text, path
    # Ground truth: nothing changed, nothing was sent.
    assert acme_view(c) == before
    assert [x for _, x in c.commands() if x.run_id in (c.held.run_id, c.approval.run_id)] == []
    assert [r for _, r in c.api.requests() if r.rerun_of == c.held.run_id or r.tenant_id == "acme"] == []
