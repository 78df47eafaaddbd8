"""The registry's pure core: compatibility levels, ids, versions, replay of its log."""

from __future__ import annotations

import json

import pytest

from services.registry.core import RegistryError, RegistryState, check

V1 = json.dumps({"type": "record", "name": "R", "fields": [{"name": "a", "type": "string"}]})
V2_OPTIONAL = json.dumps(
    {
        "type": "record",
        "name": "R",
        "fields": [
            {"name": "a", "type": "string"},
            {"name": "b", "type": ["null", "string"], "default": None},
        ],
    }
)
V2_REQUIRED = json.dumps(
    {
        "type": "record",
        "name": "R",
        "fields": [{"name": "a", "type": "string"}, {"name": "b", "type": "string"}],
    }
)
V2_RETYPED = json.dumps({"type": "record", "name": "R", "fields": [{"name": "a", "type": "int"}]})


def registered(state: RegistryState, subject: str, schema: str) -> int:
    sid, record = state.plan_register(subject, schema)
    if record:
        state.apply(record)
    return sid


def test_adding_an_optional_field_is_full_transitive_compatible():
    assert check("FULL_TRANSITIVE", V2_OPTIONAL, [V1]) == []


def test_a_new_required_field_breaks_backward_but_not_forward():
    assert check("BACKWARD", V2_REQUIRED, [V1])
    assert check("FORWARD", V2_REQUIRED, [V1]) == []
    assert check("FULL", V2_REQUIRED, [V1])


def test_changing_a_type_is_incompatible_and_none_allows_anything():
    assert check("FULL_TRANSITIVE", V2_RETYPED, [V1])
    assert check("NONE", V2_RETYPED, [V1]) == []


def test_registering_is_idempotent_and_ids_are_global():
    state = RegistryState()
    a = registered(state, "t1-value", V1)
    assert registered(state, "t1-value", json.dumps(json.loads(V1), indent=2)) == a  # same schema, other text
    assert registered(state, "t2-value", V1) == a  # same schema under another subject: same id
    b = registered(state, "t1-value", V2_OPTIONAL)
    assert b != a and state.versions("t1-value") == [a, b]
    assert state.lookup("t1-value", V2_OPTIONAL) == (2, b)


def test_incompatible_registration_is_refused_with_409():
    state = RegistryState()
    registered(state, "s", V1)
    with pytest.raises(RegistryError) as err:
        state.plan_register("s", V2_RETYPED)
    assert err.value.status == 409 and "incompatible" in err.value.message


def test_invalid_schema_and_unknown_subject_errors_use_confluent_codes():
    state = RegistryState()
    with pytest.raises(RegistryError) as err:
        state.plan_register("s", "{not json")
    assert err.value.code == 42201
    with pytest.raises(RegistryError) as err:
        state.versions("missing")
    assert err.value.code == 40401


def test_state_is_rebuilt_from_its_log_records():
    live, log = RegistryState(), []
    for subject, schema in (("s", V1), ("s", V2_OPTIONAL), ("u", V1)):
        _, record = live.plan_register(subject, schema)
        if record:
            live.apply(record)
            log.append(record)
    log.append(live.plan_config("u", "NONE"))
    replayed = RegistryState()
    for record in log:
        replayed.apply(record)
    assert replayed.subjects == live.subjects and replayed.schemas == live.schemas
    assert replayed.level("u") == "NONE" and replayed.level("s") == "FULL_TRANSITIVE"
