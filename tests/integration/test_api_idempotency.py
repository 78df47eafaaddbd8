"""The API's idempotency contract (Stripe's semantics, decided at the request) and tenant-scoped run ids.

The API's answer for an Idempotency-Key or a client's run id comes from its own table, written in the
same transaction as the decision to publish: never from the projection, which trails the topic.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import apistack
import pytest
from apistack import ACME, GLOBEX, INPUT, Api, open_api
from helpers import unique
from unit.test_projection_core import completed_after_retry

from keel.serde import register_contracts, registry_client
from keel.settings import Settings
from services.projector.schema import create_schema, drop_schema

pytestmark = pytest.mark.integration
api = apistack.api  # the fixture
BODY = {"workflow": "outbound_email", "input": INPUT}
OTHER = {"workflow": "outbound_email", "input": {**INPUT, "lead_name": "Eve"}}


def post(api: Api, body: dict, key: str | None = None, headers: dict = ACME):  # type: ignore[no-untyped-def]
    return api.client.post(
        "/v1/runs", headers={**headers, **({"Idempotency-Key": key} if key else {})}, json=body
    )


def test_a_key_reused_with_another_body_is_a_conflict_at_once(api):
    key = unique("order")
    first = post(api, BODY, key)
    assert first.status_code == 202, first.text
    # Immediately: the projection knows nothing of the first run yet (no projector runs here).
    second = post(api, OTHER, key)
    assert (second.status_code, second.json()["error"]["code"]) == (409, "request_conflict"), second.text
    assert "Idempotency-Key" in second.json()["error"]["message"]
    again = post(api, BODY, key)
    assert (again.status_code, again.json()["run_id"]) == (202, first.json()["run_id"])
    published = api.requests()
    assert {r.run_id for _, r in published} == {first.json()["run_id"]}
    assert {r.input_json for _, r in published} == {published[0][1].input_json}  # the first body only


@pytest.mark.parametrize("same_body", [True, False], ids=["same-body", "different-bodies"])
def test_twenty_concurrent_requests_under_one_key_make_one_run(api, same_body):
    key = unique("order")
    bodies = [
        BODY if same_body else {"workflow": "outbound_email", "input": {**INPUT, "lead_name": f"n{i}"}}
        for i in range(20)
    ]
    with ThreadPoolExecutor(20) as pool:
        replies = list(pool.map(lambda b: post(api, b, key), bodies))
    accepted = [r for r in replies if r.status_code == 202]
    refused = [r for r in replies if r.status_code != 202]
    assert len({r.json()["run_id"] for r in accepted}) == 1
    if same_body:
        assert len(accepted) == 20
    else:
        assert len(accepted) == 1 and {(r.status_code, r.json()["error"]["code"]) for r in refused} == {
            (409, "request_conflict")
        }
    published = api.requests()
    assert {r.run_id for _, r in published} == {accepted[0].json()["run_id"]}
    assert len({r.input_json for _, r in published}) == 1


def test_a_key_with_an_explicit_run_id_never_makes_a_second_run(api):
    key, run_a, run_b = unique("order"), unique("mine"), unique("mine")
    first = post(api, {**BODY, "run_id": run_a}, key)
    assert first.status_code == 202 and first.json()["run_id"] == run_a
    second = post(api, {**BODY, "run_id": run_b}, key)
    assert (second.status_code, second.json()["error"]["code"]) == (409, "request_conflict")
    assert post(api, {**BODY, "run_id": run_a}, key).json()["run_id"] == run_a
    assert post(api, {**BODY, "run_id": run_a}).json()["run_id"] == run_a  # the run id alone: same run
    assert {r.run_id for _, r in api.requests()} == {first.json()["keel_run_id"]}


def test_a_run_id_reused_with_another_body_is_a_conflict_and_with_the_same_body_the_same_run(api):
    run_id = unique("mine")
    first = post(api, {**BODY, "run_id": run_id})
    assert first.status_code == 202 and first.json()["run_id"] == run_id
    changed = post(api, {**OTHER, "run_id": run_id})
    assert (changed.status_code, changed.json()["error"]["code"]) == (409, "request_conflict")
    assert "run_id" in changed.json()["error"]["message"]
    again = post(api, {**BODY, "run_id": run_id})
    assert (again.status_code, again.json()["run_id"]) == (202, run_id)
    assert len({r.run_id for _, r in api.requests()}) == 1


def test_the_answer_for_a_key_survives_a_projection_rebuild(api):
    key = unique("order")
    assert post(api, BODY, key).status_code == 202
    drop_schema(api.conn, api.schema)  # what a rebuild swaps away
    create_schema(api.conn, api.schema)
    assert post(api, OTHER, key).status_code == 409


def test_client_run_ids_are_scoped_by_tenant_and_read_back_under_the_clients_id(api):
    run_id = unique("order")
    mine = post(api, {**BODY, "run_id": run_id})
    theirs = post(api, {**BODY, "run_id": run_id}, headers=GLOBEX)  # the same client id, another tenant
    assert mine.status_code == theirs.status_code == 202, theirs.text
    assert mine.json()["run_id"] == theirs.json()["run_id"] == run_id
    internal = {r.tenant_id: r.run_id for _, r in api.requests(expect=2)}
    assert internal == {"acme": mine.json()["keel_run_id"], "globex": theirs.json()["keel_run_id"]}
    assert len(set(internal.values())) == 2 and run_id not in internal.values()
    assert mine.headers["location"] == f"/v1/runs/{run_id}"

    api.project(completed_after_retry(internal["acme"]).events)  # what the projector will write
    run = api.client.get(f"/v1/runs/{run_id}", headers=ACME).json()
    assert (run["run_id"], run["keel_run_id"], run["status"]) == (run_id, internal["acme"], "completed")
    timeline = api.client.get(f"/v1/runs/{run_id}/events", headers=ACME).json()
    assert timeline["run_id"] == run_id and timeline["events"][0]["kind"] == "created"
    listed = api.client.get("/v1/runs", headers=ACME).json()["runs"]
    assert {"run_id": run_id, "keel_run_id": internal["acme"]}.items() <= next(
        r for r in listed if r["keel_run_id"] == internal["acme"]
    ).items()
    assert api.client.get(f"/v1/runs/{run_id}", headers=GLOBEX).status_code == 404  # globex's: not projected
    for path in (f"/v1/runs/{internal['acme']}", f"/v1/runs/{internal['acme']}/events"):
        assert api.client.get(path, headers=GLOBEX).status_code == 404


def test_ids_of_the_form_keel_assigns_are_refused_as_client_run_ids(api):
    keel_like = "run-" + "0" * 32
    reply = post(api, {**BODY, "run_id": keel_like})
    assert (reply.status_code, reply.json()["error"]["code"]) == (422, "invalid_request")


@pytest.fixture
def unregistered(stack: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    """The API with its topic's contract not registered yet: every publish fails (a real failure)."""
    monkeypatch.delenv("KEEL_API_KEYS", raising=False)
    yield from open_api(stack, register=False)


def test_a_publish_that_failed_after_the_key_was_recorded_is_retried_by_the_same_body(unregistered):
    api, key = unregistered, unique("order")
    failed = post(api, BODY, key)
    assert (failed.status_code, failed.json()["error"]["code"]) == (503, "broker_unavailable")
    assert "same Idempotency-Key" in failed.json()["error"]["message"]
    assert post(api, OTHER, key).status_code == 409  # the key is taken by the first body
    register_contracts(registry_client(api.settings.schema_registry_url), {api.topic: "run_request"})
    retried = post(api, BODY, key)
    assert retried.status_code == 202, retried.text
    [(_, request)] = api.requests(expect=1)
    assert request.run_id == retried.json()["run_id"]


def test_a_503_without_a_key_says_a_retry_may_start_a_second_run(unregistered):
    failed = post(unregistered, BODY)
    assert failed.status_code == 503
    message = failed.json()["error"]["message"]
    assert "Idempotency-Key" in message and "second run" in message
