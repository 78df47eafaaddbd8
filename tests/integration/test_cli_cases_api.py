"""`keel quarantine`, `keel approvals`, `keel pause|cancel` against the API on a real port, over the real
broker and database (the scheduler stood in for as in test_api_cases)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator

import pytest
import uvicorn
from helpers import wait_for
from test_api_cases import OPERATOR_ID, Cases, cases  # noqa: F401  (the fixture)
from unit import case_stories as cs
from unit.test_projection_core import Story

from keel.contracts import ControlCommand
from keel_ops.cli import main

pytestmark = pytest.mark.integration


@pytest.fixture
def served(cases: Cases, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cases]:  # noqa: F811
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(cases.client.app, host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, timeout=20, what="the API to listen")
        monkeypatch.setenv("KEEL_API_URL", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("KEEL_API_KEY", "ops-dev-key")
        yield cases
    finally:
        server.should_exit = True
        thread.join(20)


def test_an_operator_lists_shows_and_decides_a_case(served, capsys, tmp_path):
    c = served
    assert main(["quarantine", "list"]) == 0
    listed = capsys.readouterr().out
    assert c.case in listed and c.their_case in listed and c.approval_case in listed
    assert main(["quarantine", "show", c.case]) == 0
    shown = capsys.readouterr().out
    assert "unknown_outcome" in shown and "#1 failed" in shown and "ada@example.com" in shown

    bad = tmp_path / "input.json"
    bad.write_text(json.dumps({"to": "nobody", "subject": "Hi", "body": "x"}))
    assert main(["quarantine", "decide", c.case, "--edit", str(bad), "--reason", "fix"]) == 1
    assert "HTTP 400" in (err := capsys.readouterr().err) and "$.to" in err
    assert (
        main(["quarantine", "decide", c.case, "--edit", str(tmp_path / "missing.json"), "--reason", "x"]) == 1
    )
    assert "cannot read the edited input file" in capsys.readouterr().err

    def resolve(story: Story, cmd: ControlCommand) -> None:
        args = json.loads(cmd.args_json or "{}")
        cs.resolve(
            story,
            args["case_id"],
            args["decision"],
            cmd.command_id,
            by=cmd.issued_by or "",
            reason=cmd.reason,
        )

    c.scheduler(c.held, resolve)
    assert main(["quarantine", "decide", c.case, "--retry", "--reason", "the provider says not sent"]) == 0
    out = capsys.readouterr().out
    assert f"retry by {OPERATOR_ID}" in out and "the provider says not sent" in out
    assert main(["quarantine", "decide", c.case, "--fail", "--reason", "again"]) == 1
    assert "HTTP 409" in capsys.readouterr().err


def test_a_tenant_approves_the_payload_it_was_shown_and_pauses_its_own_run_only(served, capsys, monkeypatch):
    c = served
    monkeypatch.setenv("KEEL_API_KEY", "acme-dev-key")
    c.client.app.state.deps.api.decision_wait_s = 0.3  # nobody answers: pending
    assert main(["approvals", "approve", c.approval_case, "--reason", "finance said yes"]) == 3
    out = capsys.readouterr().out
    assert json.dumps(cs.REFUND_INPUT, sort_keys=True) in out and "not decided yet" in out
    [(_, cmd)] = c.commands(expect=1)
    assert json.loads(cmd.args_json or "")["bound_to"] == {
        "input_ref": "sha256:" + "3" * 64,
        "idempotency_key": cs.key_of(c.approval, "refund"),
    }
    assert main(["pause", c.held.run_id, "--reason", "maintenance"]) == 0
    assert "pause of run" in capsys.readouterr().out
    assert main(["cancel", c.theirs.run_id, "--reason", "not mine"]) == 1
    assert "HTTP 404" in capsys.readouterr().err
    assert sorted(x.action for _, x in c.commands(expect=2)) == ["decide", "pause"]
    assert main(["quarantine", "decide", c.case, "--retry", "--reason", "x"]) == 1
    assert "HTTP 403" in capsys.readouterr().err
