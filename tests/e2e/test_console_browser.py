"""The operator console in a real browser (Chromium through Playwright) against the whole stack: the
3 a.m. path end to end. Log in, open a run from its id, follow a retry to its reason, decide a quarantine
case, redrive a dead letter, read the cost chart, and see a script in a run's input shown as text.
Screenshots go to var/test-artifacts/console/ (docs/console.md)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import E2E_ENV, EventLog, Simulators
from helpers import unique, wait_for
from playwright.sync_api import Browser, Dialog, Page, expect, sync_playwright
from test_dead_letters import produce, request
from test_runs import submit

from keel.schemas import REPO_ROOT
from keel.serde import Serde, registry_client
from keel.settings import Settings
from keel.topics import RUN_REQUESTS
from keel_ops import cli_runs

pytestmark = pytest.mark.e2e
URL = E2E_ENV["KEEL_API_URL"]
CHROMIUM = os.environ.get("KEEL_CHROMIUM", "/usr/bin/chromium")
SHOTS = REPO_ROOT / "var" / "test-artifacts" / "console"
LEAD = {"lead_email": "ada@example.com", "lead_name": "Ada", "product": "Keel"}
REFUND = {"charge_id": "ch_9z8y7x", "amount_cents": 4200}
XSS = '<script>alert("owned")</script><img src=x onerror="alert(2)">'


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (set KEEL_CHROMIUM, or `apt-get install chromium`)")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        found = p.chromium.launch(executable_path=CHROMIUM)
        yield found
        found.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    opened = context.new_page()
    opened.set_default_timeout(15_000)
    yield opened
    context.close()


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def log_in(page: Page, key: str, where: str = "/console/runs") -> None:
    """Open `where`; the console sends the browser to its login page, and back once the key is taken."""
    page.goto(f"{URL}{where}")
    expect(page).to_have_url(re.compile(r"/console/login\?next="))
    page.fill("input[name=key]", key)
    page.click("button[type=submit]")
    expect(page).to_have_url(re.compile(re.escape(where.split("?")[0])))


def projected(settings: Settings, run_id: str, status: str | None = None) -> dict:
    """The run as the API shows it, once its projection has it (in `status`, when given)."""
    found: dict = {}

    def there() -> bool:
        try:
            found.update(cli_runs.api(settings, "GET", f"/v1/runs/{run_id}"))
        except cli_runs.ApiError:
            return False
        return status is None or found.get("status") == status

    wait_for(there, 60, f"run {run_id} in the projection ({status or 'any status'})")
    return found


@pytest.fixture
def acme(stack: Settings) -> Settings:
    return stack.model_copy(update={"api_url": URL, "api_key": "acme-dev-key"})


def test_open_a_run_by_its_id_and_follow_a_retry_to_its_reason(
    stack: Settings, sims: Simulators, events: EventLog, acme: Settings, page: Page
) -> None:
    sims.fault("email", kind="accept_then_timeout", ms=2500)
    run_id = submit(stack, "outbound_email", LEAD)
    assert events.wait_terminal(run_id) == "completed"
    projected(acme, run_id, "completed")

    log_in(page, "acme-dev-key")
    page.fill("input[name=q]", run_id)
    page.click("form.filters button[type=submit]")
    expect(page).to_have_url(re.compile(f"/console/runs/{run_id}$"))  # the search named one run
    expect(page.locator("h1")).to_contain_text("completed")
    expect(page.locator("#step-send_email")).to_contain_text("unknown_outcome")
    retry = page.locator("tr.kind-retry_scheduled").first
    expect(retry).to_contain_text("send_email")
    retry.locator("a.because").click()
    expect(page).to_have_url(re.compile(r"#ev-\d+$"))
    reason = page.locator("tr:target")
    expect(reason).to_contain_text("tool_failed")
    expect(reason).to_contain_text("unknown_outcome")
    shot(page, "run-retry-reason")


def test_decide_a_quarantine_case_and_see_the_decision_on_the_runs_timeline(
    stack: Settings, sims: Simulators, events: EventLog, acme: Settings, page: Page
) -> None:
    sims.fault("payments", kind="null_field", field="refund_id", times=1)  # refunds, then answers badly
    run_id = submit(stack, "refund_once", REFUND)
    assert events.wait_terminal(run_id) == "quarantined"
    projected(acme, run_id)

    log_in(page, "ops-dev-key", "/console/cases")

    def listed() -> bool:
        page.reload()
        return page.locator(f"a[href='/console/runs/{run_id}']").count() > 0

    wait_for(listed, 30, f"the case of {run_id} in the queue")
    page.locator("tr", has=page.locator(f"a[href='/console/runs/{run_id}']")).locator("td a").first.click()
    expect(page.locator("dl.facts")).to_contain_text("validation")
    shot(page, "case-evidence")
    page.check("input[name=decision][value=retry]")
    page.fill("#decide input[name=reason]", "the provider fixed its answers")
    page.click("#decide button[type=submit]")
    expect(page).to_have_url(re.compile(f"/console/runs/{run_id}"))
    expect(page.locator(".notice")).to_contain_text("case")

    def resolved() -> bool:
        page.reload()
        return page.locator("tr.kind-quarantine_resolved").count() > 0

    wait_for(resolved, 60, "the decision on the run's timeline")
    expect(page.locator("tr.kind-quarantine_resolved").first).to_contain_text("key:ops-dev")
    expect(page.locator("#cases")).to_contain_text("retry")
    shot(page, "case-decided")


def test_inspect_a_dead_letter_decoded_and_redrive_it(stack: Settings, keel: object, page: Page) -> None:
    serde = Serde(registry_client(stack.schema_registry_url))
    lost = request(unique("no_such_workflow"), LEAD)
    partition, offset = produce(stack, lost.run_id, serde.encode(RUN_REQUESTS, lost))

    log_in(page, "ops-dev-key", "/console/dead-letters")
    row = page.locator("tr", has_text=lost.workflow)  # its reason names the unknown workflow

    def listed() -> bool:
        page.reload()
        return row.count() > 0

    wait_for(listed, 30, f"the dead letter of {lost.run_id}")
    row.locator("td a").first.click()
    expect(page.locator("#decoded")).to_contain_text(lost.run_id)  # read with keel.run-requests' contract
    expect(page.locator("dl.facts")).to_contain_text(f"partition {partition} offset {offset}")
    page.click("#redrive button[type=submit]")
    expect(page.locator(".notice")).to_contain_text("redriven to")
    shot(page, "dead-letter-redriven")


def test_the_cost_chart_shows_the_days_spend(
    stack: Settings, sims: Simulators, events: EventLog, acme: Settings, page: Page
) -> None:
    run_id = submit(stack, "outbound_email", LEAD)  # its draft is a paid model call
    assert events.wait_terminal(run_id) == "completed"
    wait_for(lambda: float(projected(acme, run_id)["cost_usd"] or 0) > 0, 30, "the run's cost")
    log_in(page, "ops-dev-key", "/console/costs?group=tenant")
    chart = page.locator("svg#cost-chart")
    expect(chart).to_be_visible()
    bars = chart.locator("rect title", has_text="acme")
    assert bars.count() >= 1
    shot(page, "costs")


def test_a_script_in_a_run_input_is_shown_as_text_and_never_runs(
    stack: Settings, events: EventLog, sims: Simulators, acme: Settings, page: Page
) -> None:
    run_id = submit(stack, "outbound_email", {**LEAD, "lead_name": XSS})
    events.wait_terminal(run_id)
    projected(acme, run_id)
    dialogs: list[Dialog] = []
    page.on("dialog", lambda d: (dialogs.append(d), d.dismiss()))
    log_in(page, "acme-dev-key", f"/console/runs/{run_id}")
    # The input is shown as its JSON text: the payload's characters, quotes escaped as JSON does.
    expect(page.locator("#run-input")).to_contain_text('<script>alert(\\"owned\\")</script>')
    expect(page.locator("#run-input")).to_be_visible()
    assert page.locator("main script").count() == 0 and page.locator("main img").count() == 0
    assert dialogs == []
    shot(page, "xss-as-text")
