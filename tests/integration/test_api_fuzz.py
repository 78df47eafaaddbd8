"""Bad input never gets a 5xx: a bounded schemathesis run against /openapi.json of the real app (real
database, real broker), plus the findings of earlier fuzzing kept as plain tests.

Every answer must be a 4xx or a success, and must match the document: status codes, bodies, headers.
"""

from __future__ import annotations

import base64
import json

import apistack
import pytest
import schemathesis
from apistack import ACME, Api
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import CheckFunction, GenerationMode, checks
from test_role_matrix import KEYS, MATRIX

from services.api.apikeys import ROLES

pytestmark = pytest.mark.integration
api = apistack.api  # the fixture
OPS = {"Authorization": "Bearer ops-dev-key"}
# Bounded: a fixed number of examples per operation and mode; the whole module takes well under a minute.
EXAMPLES = 30
BOUNDED = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same examples on every run: a failure here is reproducible
    suppress_health_check=list(HealthCheck),
)


def operations(api: Api) -> list[schemathesis.APIOperation]:
    schema = schemathesis.openapi.from_asgi("/openapi.json", api.client.app)
    schema.config.generation.update(allow_x00=True)
    found = [result.ok() for result in schema.get_all_operations()]
    # Never "redrive every waiting dead letter": the dead-letter topic is shared with other work.
    chosen = [op for op in found if op.path != "/v1/dead-letters/redrive"]
    assert chosen
    return chosen


def examples(role: str, method: str, path: str) -> int:
    """Bounded: every operation gets the full count with the least role that may call it (its "home"),
    a few with the other roles that may, and fewer with the roles that get 403 (the 403 must match the
    document too). Roles per route: the role matrix (test_role_matrix.MATRIX)."""
    allowed = MATRIX.get((method.upper(), path), set(ROLES))
    if role not in allowed:
        return 2
    return EXAMPLES if role == min(allowed, key=ROLES.index) else 5


def semantic(case: schemathesis.Case) -> list[CheckFunction]:
    """Where validity is not the document's to say, a schema-valid request may be refused with a 4xx:
    a run's input is checked by its workflow's own input schema (runtime data) and refused with a NUL in
    it; a cursor is opaque, valid only as a previous page returned it; a replay's tool definition is
    checked by the tool-definition rules, which are code, not the document; so is a definition registered
    (a raw YAML or JSON body, checked by the definition rules), and a decision, whose fields depend on
    one another (`input` with edit only, `output` with skip only), which the document does not say."""
    where = (case.operation.method, case.operation.path)
    semantic = (
        where == ("post", "/v1/runs")
        or (where in (("get", "/v1/runs"), ("get", "/v1/audit")) and "cursor" in (case.query or {}))
        or (where == ("post", "/v1/runs/{run_id}/replay") and isinstance(case.body, dict))
        or where
        in (("post", "/v1/workflows"), ("post", "/v1/tools"), ("post", "/v1/quarantine/{case_id}/decide"))
    )
    return [checks.positive_data_acceptance] if semantic else []


def fuzz(api: Api, role: str) -> None:
    """Each operation, in positive and negative mode, a fixed number of examples each."""
    headers = {"Authorization": f"Bearer {KEYS[role]}"}
    for op in operations(api):
        n = examples(role, op.method, op.path)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(BOUNDED, max_examples=n)
            @given(case=op.as_strategy(generation_mode=mode))
            def check(case: schemathesis.Case) -> None:
                case.call_and_validate(headers=headers, excluded_checks=semantic(case))

            try:
                check()
            except Unsatisfiable:
                # Nothing can break the document's rules (no inputs, or only unconstrained strings).
                assert mode is GenerationMode.NEGATIVE, (op.method, op.path)


@pytest.mark.parametrize("role", ROLES)
def test_no_route_answers_5xx_and_every_answer_matches_its_document_with_a_key_of_each_role(api, role):
    fuzz(api, role)


def test_a_nul_or_impossible_id_in_a_path_is_404_not_a_database_error(api):
    for path in ("/v1/runs/a%00b", "/v1/runs/a%00b/events", "/v1/runs/" + "x" * 300):
        reply = api.client.get(path, headers=ACME)
        assert (reply.status_code, reply.json()["error"]["code"]) == (404, "run_not_found"), path
    for method, path in (("GET", "/v1/dead-letters/a%00b"), ("POST", "/v1/dead-letters/a%00b:0:1/redrive")):
        reply = api.client.request(method, path, headers=OPS)
        assert (reply.status_code, reply.json()["error"]["code"]) == (404, "not_found"), path


def test_a_nul_in_a_query_parameter_or_inside_a_cursor_is_400(api):
    smuggled = base64.urlsafe_b64encode(json.dumps(["2025-01-01T00:00:00+00:00", "run\u0000"]).encode())
    for query in ("status=a%00", "workflow=a%00", f"cursor={smuggled.decode()}"):
        reply = api.client.get(f"/v1/runs?{query}", headers=ACME)
        assert reply.status_code == 400, (query, reply.text)


def test_an_idempotency_key_postgres_could_not_store_is_400(api):
    for key in ("a\x00b", "tab\there", "x" * 256):
        reply = api.client.post(
            "/v1/runs", headers={**ACME, "Idempotency-Key": key}, json={"workflow": "outbound_email"}
        )
        assert (reply.status_code, reply.json()["error"]["code"]) == (400, "invalid_parameter"), key
