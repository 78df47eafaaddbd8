"""Registering tools through the API (admins), listing their versions (any role)."""

from __future__ import annotations

import yaml
from apistack import ACME, api  # noqa: F401
from helpers import unique

from keel.definitions.log import read_all
from keel.schemas import REPO_ROOT

ADMIN = {"Authorization": "Bearer admin-dev-key"}  # registering definitions is for admins
REFUND = (REPO_ROOT / "docs" / "examples" / "tools" / "refund.v1.yaml").read_text()
EMAIL = (REPO_ROOT / "tools" / "email.v1.yaml").read_text()


def definition(name: str, version: int = 1, description: str = "Refund a charge.") -> str:
    data = yaml.safe_load(REFUND) | {"name": name, "version": version, "description": description}
    return yaml.safe_dump(data, sort_keys=False)


def topic_of(api) -> str:  # noqa: F811
    return api.client.app.state.deps.api.definitions_topic


def test_apply_created_unchanged_conflict_and_versions(api):  # noqa: F811
    name = unique("tool").replace("-", "_")
    created = api.client.post("/v1/tools", content=definition(name), headers=ADMIN)
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["name"], body["version"], body["outcome"]) == (name, 1, "created")
    again = api.client.post("/v1/tools", content=definition(name), headers=ADMIN)
    assert (again.status_code, again.json()["digest"]) == (200, body["digest"])
    other = api.client.post("/v1/tools", content=definition(name, description="Other."), headers=ADMIN)
    assert other.status_code == 409 and other.json()["error"]["code"] == "definition_conflict"
    assert [(c.kind, c.name) for c in read_all(api.settings, topic_of(api))] == [("tool", name)]
    v2 = api.client.post("/v1/tools", json=yaml.safe_load(definition(name, 2, "Two.")), headers=ADMIN)
    assert v2.status_code == 201, v2.text
    listed = api.client.get(f"/v1/tools/{name}/versions", headers=ACME)
    assert listed.status_code == 200, listed.text
    versions = listed.json()["versions"]
    assert [(v["version"], v["source"], v["description"]) for v in versions] == [
        (1, "registered", "Refund a charge."),
        (2, "registered", "Two."),
    ]
    assert versions[0]["digest"] == body["digest"] and versions[0]["applied_by"] == "key:admin-dev"
    assert api.client.get("/v1/tools/email/versions", headers=ACME).json()["versions"][0]["source"] == "file"
    assert api.client.get("/v1/tools/nope_nope/versions", headers=ACME).status_code == 404


def test_an_invalid_tool_is_refused_with_path_and_line_and_never_reaches_the_topic(api):  # noqa: F811
    name = unique("tool").replace("-", "_")
    text = definition(name).replace("path: /v1/refunds", "path: /v1/refunds/{nope}", 1)
    refused = api.client.post("/v1/tools", content=text, headers=ADMIN)
    assert refused.status_code == 422, refused.text
    [problem] = refused.json()["error"]["problems"]
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "{nope}" in t)
    assert (problem["path"], problem["line"]) == ("$.request.path", line) and "{nope}" in problem["message"]
    assert all(c.name != name for c in read_all(api.settings, topic_of(api)))


def test_only_admins_register_tools_and_a_shipped_file_version_keeps_its_content(api):  # noqa: F811
    for key in ("acme-dev-key", "ops-dev-key"):
        refused = api.client.post("/v1/tools", content=EMAIL, headers={"Authorization": f"Bearer {key}"})
        assert refused.status_code == 403, key
    edited = EMAIL.replace("description: ", "description: Edited ", 1)
    assert api.client.post("/v1/tools", content=edited, headers=ADMIN).status_code == 409
    assert api.client.post("/v1/tools", content=EMAIL, headers=ADMIN).status_code == 201
