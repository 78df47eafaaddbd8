"""Run requests read from the topic are held to the API's rules before anything is issued or spent."""

from __future__ import annotations

import json

import pytest
from test_scheduler_core import CATALOG, LEAD, T0, request

from keel.contracts import RunRequested
from keel.idempotency import content_ref
from services.scheduler.core import Rejected, decide


def with_fields(**fields: object) -> RunRequested:
    base = request().to_dict()
    return RunRequested.from_dict({**base, **fields})


@pytest.mark.parametrize(
    ("fields", "error_class", "says"),
    [
        ({"run_id": "../../x"}, "invalid_request", "run_id"),
        ({"run_id": ""}, "invalid_request", "run_id"),
        ({"run_id": "r" * 200}, "invalid_request", "run_id"),
        ({"tenant_id": ""}, "invalid_request", "tenant_id"),
        ({"tenant_id": "Acme Corp"}, "invalid_request", "tenant_id"),
        ({"workflow": "../outbound_email"}, "invalid_request", "workflow"),
        ({"task_id": "t\x00"}, "invalid_request", "task_id"),
        ({"request_id": ""}, "invalid_request", "request_id"),
        ({"requested_by": "x" * 1000}, "invalid_request", "requested_by"),
        ({"trace_id": "a\x00b"}, "invalid_request", "trace_id"),
        ({"workflow_version": 0}, "invalid_request", "workflow_version"),
        ({"input_json": None, "input_ref": "sha256:abc"}, "invalid_request", "input_ref"),
        ({"input_ref": "sha256:not-the-input"}, "invalid_input", "input_ref"),
        ({"input_json": '{"lead_email": NaN, "lead_name": "A", "product": "K"}'}, "invalid_input", "NaN"),
        (
            {"input_json": '{"lead_email": 1e400, "lead_name": "A", "product": "K"}'},
            "invalid_input",
            "finite",
        ),
        ({"input_json": json.dumps({**LEAD, "lead_name": "A\x00"})}, "invalid_input", "NUL"),
        ({"input_json": json.dumps({**LEAD, "pad": "x" * 300_000})}, "oversized", "bytes"),
        ({"input_json": "{} trailing"}, "invalid_input", "JSON"),
    ],
)
def test_a_request_breaking_an_intake_rule_is_rejected_before_anything_is_issued(fields, error_class, says):
    with pytest.raises(Rejected) as err:
        decide(None, with_fields(**fields), 0, T0, CATALOG)
    assert err.value.error_class == error_class and says in err.value.reason


def test_every_problem_of_a_request_is_named_at_once():
    with pytest.raises(Rejected) as err:
        decide(None, with_fields(run_id="../../x", tenant_id=""), 0, T0, CATALOG)
    assert "run_id" in err.value.reason and "tenant_id" in err.value.reason


def test_a_valid_request_with_its_input_ref_starts_the_run():
    d = decide(None, with_fields(input_ref=content_ref(LEAD)), 0, T0, CATALOG)
    assert d.state is not None and d.state.input == LEAD
