"""`keel audit` against the API on a real port, over the real database (rows projected as in test_audit)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator

import apistack
import pytest
import uvicorn
from helpers import wait_for
from test_audit import T0, api, expected_rows, project_scenario  # noqa: F401  (the fixture)

from keel_ops.cli import main

pytestmark = pytest.mark.integration


@pytest.fixture
def served(api: apistack.Api, monkeypatch: pytest.MonkeyPatch) -> Iterator[apistack.Api]:  # noqa: F811
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(api.client.app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, timeout=20, what="the API to listen")
        monkeypatch.setenv("KEEL_API_URL", f"http://127.0.0.1:{port}")
        yield api
    finally:
        server.should_exit = True
        thread.join(20)


def test_keel_audit_lists_a_runs_actions_with_their_actors(served, capsys, monkeypatch):
    events, commands = project_scenario(served)
    acme_run = next(e.run_id for e in events if e.tenant_id == "acme")
    globex_run = next(e.run_id for e in events if e.tenant_id == "globex")
    monkeypatch.setenv("KEEL_API_KEY", "acme-dev-key")
    assert main(["audit", "--run", acme_run, "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    want = {w for w in expected_rows(events, commands) if w[4] == acme_run}
    assert {(r["id"], r["tenant_id"], r["actor"], r["action"], r["run_id"]) for r in rows} == want
    assert main(["audit", "--run", globex_run]) == 0
    assert capsys.readouterr().out == ""  # another tenant's run: nothing

    assert main(["audit", "--actor", "key:acme-2"]) == 0
    [line] = capsys.readouterr().out.splitlines()
    assert "key:acme-2  command:resume" in line and acme_run in line

    monkeypatch.setenv("KEEL_API_KEY", "ops-dev-key")
    assert main(["audit", "--since", T0.isoformat(), "--action", "command:cancel", "--limit", "1"]) == 0
    [line] = capsys.readouterr().out.splitlines()
    assert "token:https://idp#bob  command:cancel" in line and globex_run in line
    # Paged: --limit larger than a page is followed across pages; smaller stops there.
    assert main(["audit", "--run", acme_run, "--limit", "2"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
