"""The console's session helpers: where a login may send the browser back to, and the CSRF token."""

from __future__ import annotations

import pytest

from services.api.console.session import csrf_token, form_of, safe_next


@pytest.mark.parametrize(
    "target",
    [None, "", "https://evil.example/console/", "//evil.example/console/runs", "/console//evil.example",
     "/console/\\evil", "/v1/runs", "/consolex/runs", "javascript:alert(1)"],
)  # fmt: skip
def test_a_login_never_sends_the_browser_off_the_console(target: str | None) -> None:
    assert safe_next(target) == "/console/runs"


def test_a_login_sends_the_browser_back_to_the_console_page_it_came_from() -> None:
    assert safe_next("/console/runs/run-1?notice=x") == "/console/runs/run-1?notice=x"


def test_the_csrf_token_is_bound_to_the_credential_and_does_not_reveal_it() -> None:
    assert csrf_token("acme-dev-key") == csrf_token("acme-dev-key")
    assert csrf_token("acme-dev-key") != csrf_token("globex-dev-key")
    assert "acme-dev-key" not in csrf_token("acme-dev-key") and len(csrf_token("x")) == 64


def test_a_form_keeps_blank_fields_and_the_last_of_a_repeated_one() -> None:
    assert form_of(b"reason=&csrf=a&csrf=b&redrive%3At%3A0%3A1=1") == {
        "reason": "",
        "csrf": "b",
        "redrive:t:0:1": "1",
    }
