"""`keel tools`: the contracts printed, and bad definitions refused there with file, line and path."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from keel_ops.cli import main

BAD = """\
name: ticket
version: 1
description: Open a ticket.
input_schema: {type: object, properties: {title: {type: string}}}
output_schema: {type: object, required: [ticket_id], properties: {ticket_id: {type: string}}}
external_id: ticket_id
request: {path: "/v1/queues/{queue}/tickets"}
idempotency: {mode: none}
"""


def test_list_prints_each_tool_with_its_mode(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tools", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["crm@1", "lookup", "side"]
    assert out[1].split()[:3] == ["email@1", "provider_key", "side"]


def test_show_prints_the_contract(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tools", "show", "email@1"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["idempotency"] == {"mode": "provider_key", "header": "Idempotency-Key"}
    assert shown["digest"].startswith("sha256:") and shown["source"].endswith("tools/email.v1.yaml")
    assert shown["input_schema"]["required"] == ["to", "subject", "body"]


def test_a_bad_definition_is_refused_at_list_and_show(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "ticket.v1.yaml").write_text(BAD)
    monkeypatch.setenv("KEEL_TOOL_DIRS", str(tmp_path))
    for argv in (["tools", "list"], ["tools", "show", "email@1"]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert "ticket.v1.yaml:7: $.request.path: placeholder {queue} is not a property" in err


def test_validate_names_each_file_and_its_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "ticket.v1.yaml"
    bad.write_text(BAD)
    good = Path(__file__).parents[2] / "tools" / "crm.v1.yaml"
    assert main(["tools", "validate", str(good), str(bad)]) == 1
    out = capsys.readouterr().out
    assert f"{good}: ok: crm@1 (sha256:" in out
    assert f"{bad}:7: $.request.path: placeholder {{queue}}" in out
    assert main(["tools", "validate", str(good)]) == 0
