"""Each role x each endpoint (docs/tenancy.md, section 1), against the real app on the real broker and
database. The endpoints come from the app's own routes, so a route added without a row here (and so
without a decided role) fails this test.

Allowed: anything but 401 and 403 (a placeholder id or an empty body is then a 404 or a 422: what matters
is that the role check let it through). Not allowed: 403. No credential or an unknown one: 401.
"""

from __future__ import annotations

import pytest
import test_api_cases
from test_api_cases import Cases

pytestmark = pytest.mark.integration
cases = test_api_cases.cases  # the fixture: the API with cases seeded and a control topic of its own

KEYS = {
    "viewer": "acme-viewer-dev-key",
    "submitter": "acme-dev-key",
    "operator": "ops-dev-key",
    "admin": "admin-dev-key",
}
TENANT = {"viewer", "submitter"}  # act for their tenant, by its own run names
READ = {"viewer", "submitter", "operator", "admin"}
WRITE_OWN = {"submitter", "operator", "admin"}  # control of a run: its tenant's submitters or operators
OPS = {"operator", "admin"}
# (method, path) -> the roles allowed. Tenant routes (a run by the tenant's own names) need a tenant:
# operators and admins, who have none, get 403 there and act through the cross-tenant routes.
MATRIX: dict[tuple[str, str], set[str]] = {
    ("POST", "/v1/runs"): {"submitter"},
    ("GET", "/v1/runs"): TENANT,
    ("GET", "/v1/runs/{run_id}"): TENANT,
    ("GET", "/v1/runs/{run_id}/events"): TENANT,
    ("GET", "/v1/runs/{run_id}/blobs/{ref}"): TENANT,
    ("GET", "/v1/runs/{run_id}/definitions"): TENANT,
    ("POST", "/v1/runs/{run_id}/replay"): TENANT,
    ("POST", "/v1/runs/{run_id}/cancel"): WRITE_OWN,
    ("POST", "/v1/runs/{run_id}/pause"): WRITE_OWN,
    ("POST", "/v1/runs/{run_id}/resume"): WRITE_OWN,
    ("POST", "/v1/runs/{run_id}/rerun"): WRITE_OWN,
    ("GET", "/v1/workflows"): READ,
    ("GET", "/v1/workflows/{name}/versions"): READ,
    ("POST", "/v1/workflows"): {"admin"},
    ("GET", "/v1/tools/{name}/versions"): READ,
    ("POST", "/v1/tools"): {"admin"},
    ("GET", "/v1/costs"): READ,
    ("GET", "/v1/audit"): READ,
    ("GET", "/v1/quarantine"): READ,
    ("GET", "/v1/quarantine/{case_id}"): READ,
    ("POST", "/v1/quarantine/{case_id}/decide"): OPS,
    ("GET", "/v1/approvals"): READ,
    ("POST", "/v1/approvals/{case_id}/approve"): WRITE_OWN,
    ("POST", "/v1/approvals/{case_id}/deny"): WRITE_OWN,
    ("GET", "/v1/dead-letters"): OPS,
    ("GET", "/v1/dead-letters/{dead_letter_id}"): OPS,
    ("POST", "/v1/dead-letters/{dead_letter_id}/redrive"): OPS,
    ("POST", "/v1/dead-letters/redrive"): OPS,
}
PUBLIC = {("GET", "/healthz")}
# Allowed callers of these are not sent: redriving every waiting dead letter acts on the shared topic.
NOT_SENT_WHEN_ALLOWED = {("POST", "/v1/dead-letters/redrive")}


def endpoints(app: object) -> set[tuple[str, str]]:
    """Every (method, path) of the app's OpenAPI document (its routes, as clients see them)."""
    paths = app.openapi()["paths"]  # type: ignore[attr-defined]
    return {(method.upper(), path) for path, ops in paths.items() for method in ops}


def concrete(path: str, c: Cases) -> str:
    return path.format(
        run_id=c.held.run_id,
        ref="sha256:" + "0" * 64,
        case_id="no-such-case",
        dead_letter_id="no-such-topic:0:1",
        name="outbound_email",
    )


def call(c: Cases, method: str, path: str, key: str | None) -> int:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {} if method == "POST" else None
    return c.client.request(method, concrete(path, c), headers=headers, json=body).status_code


def test_every_route_has_a_decided_role(cases):
    found = endpoints(cases.client.app) - PUBLIC
    assert found == set(MATRIX), (
        f"routes without a row in the role matrix: {sorted(found - set(MATRIX))}; "
        f"rows of no route: {sorted(set(MATRIX) - found)}"
    )


def test_each_role_on_each_endpoint(cases):
    c = cases
    wrong: list[str] = []
    for (method, path), allowed in sorted(MATRIX.items()):
        for who, status in (
            ("nobody", call(c, method, path, None)),
            ("unknown", call(c, method, path, "nope")),
        ):
            if status != 401:
                wrong.append(f"{method} {path} as {who}: {status}, expected 401")
        for role, key in KEYS.items():
            if role in allowed and (method, path) in NOT_SENT_WHEN_ALLOWED:
                continue
            status = call(c, method, path, key)
            if role in allowed and status in (401, 403):
                wrong.append(f"{method} {path} as {role}: {status}, expected it allowed")
            if role not in allowed and status != 403:
                wrong.append(f"{method} {path} as {role}: {status}, expected 403")
    assert not wrong, "\n".join(wrong)
    # Nothing the matrix sent reached the run: every write was refused or had an invalid body.
    assert [x for _, x in c.commands() if x.run_id == c.held.run_id] == []


def test_the_principal_id_is_who_the_command_and_the_run_request_name(cases):
    c = cases
    paused = c.client.post(
        f"/v1/runs/{c.held.run_id}/pause",
        headers={"Authorization": "Bearer acme-dev-key"},
        json={"reason": "x"},
    )
    assert paused.status_code == 202, paused.text
    [(_, cmd)] = [(k, x) for k, x in c.commands(expect=1) if x.run_id == c.held.run_id]
    assert cmd.issued_by == "key:acme-dev"
    body = {
        "workflow": "outbound_email",
        "input": {"lead_email": "a@example.com", "lead_name": "A", "product": "K"},
    }
    sent = c.client.post("/v1/runs", headers={"Authorization": "Bearer acme-dev-key"}, json=body)
    assert sent.status_code == 202, sent.text
    [request] = [r for _, r in c.api.requests(expect=1) if r.run_id == sent.json()["keel_run_id"]]
    assert request.requested_by == "key:acme-dev"
