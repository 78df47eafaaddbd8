"""What a quarantine decision may carry, checked before anything is sent: `new_effect` acknowledges the
second effect an edited input (under a new key) may make, so it goes with an edit only; a retry keeps its
key, and accepting the flag there would promise a new key the scheduler never uses."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from keel_ops.cli import main
from services.api.cases import Decide


def test_new_effect_goes_with_an_edit_only():
    assert Decide(decision="edit", reason="typo", input={"to": "a@b.c"}, new_effect=True).new_effect is True
    for other in ({"decision": "retry"}, {"decision": "skip", "output": {}}, {"decision": "fail"}):
        with pytest.raises(ValidationError, match="new_effect"):
            Decide(reason="x", new_effect=True, **other)


def test_the_cli_refuses_new_effect_without_an_edit_before_calling_the_api(capsys):
    assert main(["quarantine", "decide", "c1", "--retry", "--new-effect", "--reason", "x"]) == 1
    assert "--new-effect goes with --edit only" in capsys.readouterr().err
