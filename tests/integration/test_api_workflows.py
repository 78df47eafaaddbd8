"""Registering workflows through the API (admins), listing their versions (any role)."""

from __future__ import annotations

import yaml
from apistack import ACME, api  # noqa: F401
from helpers import unique, wait_for

from keel.definitions.log import read_all
from keel.schemas import REPO_ROOT

ADMIN = {"Authorization": "Bearer admin-dev-key"}  # registering definitions is for admins
OUTBOUND = (REPO_ROOT / "workflows" / "outbound_email.v1.yaml").read_text()
INPUT = {"lead_email": "ada@example.com", "lead_name": "Ada", "product": "Keel"}


def definition(name: str, version: int = 1, subject: str = "Hello") -> str:
    text = OUTBOUND.replace("name: outbound_email", f"name: {name}", 1).replace(
        "version: 1", f"version: {version}", 1
    )
    return text.replace("subject: ", f"subject: {subject} ", 1)


def topic_of(api) -> str:  # noqa: F811
    return api.client.app.state.deps.api.definitions_topic


def test_apply_created_unchanged_conflict_then_runs_are_accepted(api):  # noqa: F811
    name = unique("wf").replace("-", "_")
    created = api.client.post("/v1/workflows", content=definition(name), headers=ADMIN)
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["name"], body["version"], body["outcome"]) == (name, 1, "created")
    assert body["digest"].startswith("sha256:")
    again = api.client.post("/v1/workflows", content=definition(name), headers=ADMIN)
    assert (again.status_code, again.json()["digest"]) == (200, body["digest"])
    other = api.client.post("/v1/workflows", content=definition(name, subject="Changed"), headers=ADMIN)
    assert other.status_code == 409 and other.json()["error"]["code"] == "definition_conflict"
    assert len(read_all(api.settings, topic_of(api))) == 1
    as_json = yaml.safe_load(definition(name, 2, "Two"))  # JSON bodies too (JSON is YAML)
    v2 = api.client.post("/v1/workflows", json=as_json, headers=ADMIN)
    assert v2.status_code == 201
    listed = api.client.get(f"/v1/workflows/{name}/versions", headers=ACME)
    assert listed.status_code == 200
    versions = listed.json()["versions"]
    assert [(v["version"], v["source"]) for v in versions] == [(1, "registered"), (2, "registered")]
    assert versions[0]["digest"] == body["digest"] and versions[0]["applied_by"] == "key:admin-dev"
    # The API's view follows the topic: a run of the new version is accepted at once.
    submitted = api.client.post(
        "/v1/runs", json={"workflow": name, "workflow_version": 2, "input": INPUT}, headers=ACME
    )
    assert submitted.status_code in (201, 202), submitted.text


def test_a_shipped_file_version_cannot_be_registered_with_other_content(api):  # noqa: F811
    edited = OUTBOUND.replace("subject: ", "subject: Edited ", 1)
    refused = api.client.post("/v1/workflows", content=edited, headers=ADMIN)
    assert refused.status_code == 409
    same = api.client.post("/v1/workflows", content=OUTBOUND, headers=ADMIN)
    assert same.status_code == 201  # the file's own content registers (what `keel up` does)


def test_invalid_definitions_get_422_with_path_and_line_and_nothing_is_written(api):  # noqa: F811
    name = unique("wf").replace("-", "_")
    bad = (
        definition(name)
        .replace("needs: [log_to_crm]", "needs: [log_to_crn]")
        .replace("tool: crm@1", "tool: crm@4")
    )
    refused = api.client.post("/v1/workflows", content=bad, headers=ADMIN)
    assert refused.status_code == 422
    problems = refused.json()["error"]["problems"]
    assert {p["path"] for p in problems} == {"$.steps[2].needs"}  # graph first; the tool is judged once valid
    line = next(i for i, text in enumerate(bad.splitlines(), 1) if "log_to_crn" in text)
    assert problems[0]["line"] == line
    unknown_tool = definition(name).replace("tool: crm@1", "tool: crm@4")
    refused = api.client.post("/v1/workflows", content=unknown_tool, headers=ADMIN)
    assert refused.status_code == 422 and refused.json()["error"]["problems"][0]["path"] == "$.steps[1].tool"
    assert api.client.post("/v1/workflows", content="name: [", headers=ADMIN).status_code == 422
    assert read_all(api.settings, topic_of(api)) == []


def test_only_admins_register_workflows(api):  # noqa: F811
    for key in ("acme-dev-key", "ops-dev-key"):
        refused = api.client.post(
            "/v1/workflows", content=OUTBOUND, headers={"Authorization": f"Bearer {key}"}
        )
        assert refused.status_code == 403, key
    assert api.client.post("/v1/workflows", content=OUTBOUND).status_code == 401
    assert api.client.get("/v1/workflows/nope/versions", headers=ACME).status_code == 404
    wait_for(lambda: read_all(api.settings, topic_of(api)) == [], 5, "nothing to be written")
