"""The operator console (docs/console.md) against the real broker and database: its session goes
through the API's own auth code, its forms carry a CSRF token, its actions check roles as the JSON routes
do, another tenant's run is a 404, and an untrusted payload is shown as text, never run."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import test_api_cases
from apistack import Api
from helpers import unique
from httpx import Response
from test_api_cases import Cases
from unit.test_projection_core import Story

from keel.settings import Settings

pytestmark = pytest.mark.integration
cases = test_api_cases.cases  # the API with runs and cases seeded, and a control topic of its own
XSS = '<script>alert("owned")</script><img src=x onerror=alert(2)>'


@pytest.fixture
def console(cases: Cases) -> Iterator[Api]:
    yield cases.api


def login(api: Api, key: str) -> Response:
    """The login page's form, filled in and posted as a browser does (its login token included)."""
    page = api.client.get("/console/login", params={"next": "/console/runs"})
    token = re.search(r'name="login_token" value="([^"]+)"', page.text)
    assert token is not None
    return api.client.post(
        "/console/login",
        data={"login_token": token.group(1), "next": "/console/runs", "key": key},
        follow_redirects=False,
    )


def csrf_of(page: Response) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]{64})"', page.text)
    assert found is not None, "the page has no CSRF token"
    return found.group(1)


def test_without_a_session_a_page_sends_the_browser_to_login_and_back(console: Api) -> None:
    run_id = console.acme_runs[0]
    answer = console.client.get(f"/console/runs/{run_id}", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == f"/console/login?next=%2Fconsole%2Fruns%2F{run_id}"


def test_a_bad_key_is_refused_and_a_good_one_opens_a_session_cookie_the_json_api_ignores(
    console: Api,
) -> None:
    refused = login(console, "not-a-key")
    assert refused.status_code == 401 and "invalid API key" in refused.text
    assert "keel_console=" not in refused.headers.get("set-cookie", "")

    accepted = login(console, "acme-dev-key")
    assert accepted.status_code == 303 and accepted.headers["location"] == "/console/runs"
    cookie = next(c for c in accepted.headers.get_list("set-cookie") if c.startswith("keel_console="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
    assert console.client.get("/console/runs").status_code == 200
    # The cookie is a credential for the console's pages only: the JSON routes still want the header.
    assert console.client.get("/v1/runs", headers={"Cookie": "keel_console=acme-dev-key"}).status_code == 401


def test_a_run_page_shows_its_steps_timeline_and_links_each_retry_to_its_failure(console: Api) -> None:
    assert login(console, "acme-dev-key").status_code == 303
    page = console.client.get(f"/console/runs/{console.acme_runs[0]}")
    assert page.status_code == 200
    assert (
        "Content-Security-Policy" in page.headers
        and "script-src 'self'" in page.headers["content-security-policy"]
    )
    assert "send_email" in page.text and "retry_scheduled" in page.text
    why = re.search(r'href="#(ev-\d+)">why', page.text)
    assert why is not None, "the retry has no link to its reason"
    failed_row = re.search(rf'<tr id="{why.group(1)}" class="kind-([a-z_]+)"', page.text)
    assert failed_row is not None and failed_row.group(1) == "tool_failed"


def test_another_tenants_run_is_a_404_like_a_run_that_does_not_exist(console: Api) -> None:
    assert login(console, "acme-dev-key").status_code == 303
    theirs = console.client.get(f"/console/runs/{console.globex_run}")
    nobody = console.client.get("/console/runs/run-that-never-was")
    assert theirs.status_code == nobody.status_code == 404
    assert console.globex_run not in console.client.get("/console/runs").text
    # An operator sees every tenant's runs.
    assert login(console, "ops-dev-key").status_code == 303
    assert console.client.get(f"/console/runs/{console.globex_run}").status_code == 200


def test_an_action_needs_its_role_and_the_sessions_csrf_token(cases: Cases) -> None:
    api = cases.api
    run_id = cases.held.run_id  # quarantined: not ended, so it may be canceled
    assert login(api, "acme-viewer-dev-key").status_code == 303
    page = api.client.get(f"/console/runs/{run_id}")
    assert "Cancel the run" not in page.text  # not offered to a viewer...
    denied = api.client.post(
        f"/console/runs/{run_id}/cancel", data={"csrf": csrf_of(page), "reason": "x"}, follow_redirects=False
    )
    assert denied.status_code == 403  # ...and refused when posted all the same

    assert login(api, "acme-dev-key").status_code == 303
    page = api.client.get(f"/console/runs/{run_id}")
    for forged in (
        {"reason": "x"},
        {"csrf": "0" * 64, "reason": "x"},
        {"csrf": csrf_of(page) + "0", "reason": "x"},
    ):
        refused = api.client.post(f"/console/runs/{run_id}/cancel", data=forged, follow_redirects=False)
        assert refused.status_code == 403 and "CSRF" in refused.text
    assert cases.commands() == []  # nothing was sent

    sent = api.client.post(
        f"/console/runs/{run_id}/cancel",
        data={"csrf": csrf_of(page), "reason": "paged"},
        follow_redirects=False,
    )
    assert sent.status_code == 303
    [(key, command)] = cases.commands(expect=1)
    assert command.action == "cancel" and command.issued_by == "key:acme-dev" and command.reason == "paged"


def test_a_script_in_a_run_input_is_shown_as_text(console: Api, stack: Settings) -> None:
    story = Story(unique("run")).start({"lead_email": "x@example.com", "lead_name": XSS, "product": XSS})
    console.project(story.events)
    assert login(console, "acme-dev-key").status_code == 303
    page = console.client.get(f"/console/runs/{story.run_id}")
    assert page.status_code == 200
    assert "<script>alert" not in page.text and "<img src=x" not in page.text
    assert "&lt;script&gt;alert(&#34;owned&#34;)&lt;/script&gt;" in page.text or "&lt;script&gt;" in page.text


def test_a_decision_form_checks_the_edit_against_the_tools_schema_and_keeps_what_was_typed(
    cases: Cases,
) -> None:
    api = cases.api
    assert login(api, "acme-dev-key").status_code == 303
    page = api.client.get(f"/console/cases/{cases.case}")
    assert page.status_code == 200 and 'action="/console/cases/' not in page.text  # no form for a submitter
    refused = api.client.post(
        f"/console/cases/{cases.case}/decide",
        data={"csrf": csrf_of(page), "decision": "retry", "reason": "x"},
        follow_redirects=False,
    )
    assert refused.status_code == 403

    assert login(api, "ops-dev-key").status_code == 303
    page = api.client.get(f"/console/cases/{cases.case}")
    assert 'id="decide"' in page.text
    typed = '{"to": "not an address", "subject": ""}'
    form = {"csrf": csrf_of(page), "decision": "edit", "reason": "typo", "input": typed}
    bad = api.client.post(f"/console/cases/{cases.case}/decide", data=form, follow_redirects=False)
    assert bad.status_code == 400 and "$.to" in bad.text  # the API's own check, with its JSON path
    assert "{&#34;to&#34;: &#34;not an address&#34;, &#34;subject&#34;: &#34;&#34;}" in bad.text  # kept
    form = {**form, "input": "{not json"}
    assert api.client.post(f"/console/cases/{cases.case}/decide", data=form).status_code == 400
    assert cases.commands() == []  # nothing refused was sent
    # Another tenant's case is not a submitter's to see.
    assert login(api, "acme-dev-key").status_code == 303
    assert api.client.get(f"/console/cases/{cases.their_case}").status_code == 404


def test_dead_letters_are_for_operators_and_costs_draw_a_chart(console: Api) -> None:
    assert login(console, "acme-dev-key").status_code == 303
    assert console.client.get("/console/dead-letters").status_code == 403
    costs = console.client.get("/console/costs", params={"since": "2020-01-01", "until": "2020-02-01"})
    assert costs.status_code == 200 and 'id="cost-chart"' in costs.text
    assert console.client.get("/console/costs", params={"tenant": "globex"}).status_code == 403
    assert login(console, "ops-dev-key").status_code == 303
    letters = console.client.get("/console/dead-letters")
    assert letters.status_code == 200 and 'id="redrive-many"' in letters.text


def test_the_runs_list_finds_a_run_by_task_id_or_key_and_filters_by_failure_class_and_tenant(
    console: Api,
) -> None:
    retried, fanned = console.acme_runs[0], console.acme_runs[1]
    key = f"acme|outbound_email|{retried}|send_email|sha256:{'0' * 64}"
    assert login(console, "acme-dev-key").status_code == 303
    for found_by in (retried, f"task-{retried}", key):
        opened = console.client.get("/console/runs", params={"q": found_by}, follow_redirects=False)
        assert (opened.status_code, opened.headers.get("location")) == (303, f"/console/runs/{retried}")
    listed = console.client.get("/console/runs", params={"failure_class": "transient"}).text
    assert retried in listed and fanned not in listed
    assert (
        console.client.get("/console/runs", params={"tenant": "globex"}).text.count(console.globex_run) == 0
    )
    counts = console.client.get("/console/runs/counts").json()["counts"]
    assert sum(counts.values()) >= 3 and "failed" not in counts  # globex's failed run is not acme's

    assert login(console, "ops-dev-key").status_code == 303
    theirs = console.client.get("/console/runs", params={"tenant": "globex"}).text
    assert console.globex_run in theirs and retried not in theirs
