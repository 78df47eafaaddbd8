"""Credential sources for local use (environment, file) and the selection from KEEL_CREDENTIALS."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from keel.credstore import (
    SHARED_TENANT,
    CredentialConfigError,
    CredentialSettings,
    CredentialSource,
    MappingCredentials,
    PostgresCredentials,
    configured_credentials,
)

TABLE = {
    "acme": {"email": "acme-email-secret", "stripe": "acme-stripe-secret"},
    "globex": {"crm": "globex-crm-secret", "billing": "globex-only-secret"},
    SHARED_TENANT: {"email": "shared-email-secret", "crm": "shared-crm-secret"},
}
KEYS = json.dumps({"k1": base64.b64encode(os.urandom(32)).decode()})


def settings(**env: object) -> CredentialSettings:
    return CredentialSettings(**env)  # type: ignore[arg-type]


def test_a_tenant_gets_its_own_value_else_the_shared_one_and_never_another_tenants():
    creds = MappingCredentials(TABLE)
    assert creds.lookup("acme", "email") == "acme-email-secret"  # own row wins over the shared one
    assert creds.lookup("acme", "crm") == "shared-crm-secret"  # none of its own: the shared row
    assert creds.lookup("globex", "crm") == "globex-crm-secret"
    assert creds.lookup("acme", "billing") is None  # only globex has it
    assert creds.lookup("globex", "stripe") is None  # only acme has it
    assert creds.lookup("initech", "stripe") is None
    assert creds.lookup("", "email") is None  # no tenant, no credential (not even the shared one)


def test_the_shared_row_can_be_switched_off():
    creds = MappingCredentials(TABLE, shared=False)
    assert creds.lookup("acme", "crm") is None
    assert creds.lookup("acme", "email") == "acme-email-secret"


def test_a_source_never_shows_its_values():
    creds = MappingCredentials(TABLE)
    assert "secret" not in repr(creds) and "secret" not in str(creds)


def test_sources_satisfy_the_protocol():
    source: CredentialSource = MappingCredentials(TABLE)
    assert source.lookup("acme", "email") == "acme-email-secret"


def test_the_default_is_the_environment(monkeypatch):
    monkeypatch.setenv("KEEL_TOOL_CREDENTIALS", json.dumps(TABLE))
    monkeypatch.delenv("KEEL_CREDENTIALS", raising=False)
    source = configured_credentials()
    assert isinstance(source, MappingCredentials)
    assert source.lookup("globex", "billing") == "globex-only-secret"
    assert source.lookup("acme", "billing") is None


def test_without_environment_credentials_the_local_default_applies():
    local = {SHARED_TENANT: {"email": "sim-email-token"}}
    source = configured_credentials(settings(credentials="env"), local_default=local)
    assert source.lookup("acme", "email") == "sim-email-token"
    assert configured_credentials(settings(credentials="env")).lookup("acme", "email") is None
    given = settings(credentials="env", tool_credentials=json.dumps({"acme": {"email": "mine"}}))
    assert configured_credentials(given, local_default=local).lookup("globex", "email") is None


def test_a_file_source(tmp_path: Path):
    path = tmp_path / "creds.json"
    path.write_text(json.dumps(TABLE))
    source = configured_credentials(settings(credentials=f"file:{path}"))
    assert source.lookup("acme", "stripe") == "acme-stripe-secret"
    assert source.lookup("globex", "stripe") is None


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", "not JSON"),
        ('["acme"]', "JSON object of tenant"),
        ('{"acme": "flat-secret-value"}', "tenant 'acme'.*object of name"),
        ('{"acme": {"email": 42}}', "'email' of tenant 'acme' is not a string"),
        ('{"acme": {"email": ""}}', "'email' of tenant 'acme' is empty"),
    ],
)
def test_a_malformed_file_is_refused_without_echoing_it(tmp_path: Path, content, match):
    path = tmp_path / "creds.json"
    path.write_text(content)
    with pytest.raises(CredentialConfigError, match=match) as err:
        configured_credentials(settings(credentials=f"file:{path}"))
    assert str(path) in str(err.value) and "flat-secret-value" not in str(err.value)


def test_a_missing_file_is_refused(tmp_path: Path):
    with pytest.raises(CredentialConfigError, match="cannot read"):
        configured_credentials(settings(credentials=f"file:{tmp_path / 'absent.json'}"))


def test_a_malformed_environment_value_is_refused_without_echoing_it():
    with pytest.raises(CredentialConfigError, match="KEEL_TOOL_CREDENTIALS") as err:
        configured_credentials(settings(tool_credentials='{"acme": "flat-secret-value"}'))
    assert "flat-secret-value" not in str(err.value)


@pytest.mark.parametrize("value", ["vault", "file:", "postgresql", ""])
def test_an_unknown_source_is_refused(value):
    with pytest.raises(CredentialConfigError, match="KEEL_CREDENTIALS"):
        configured_credentials(settings(credentials=value))


def test_postgres_is_chosen_with_its_keys_checked_at_start_before_any_connection():
    with pytest.raises(CredentialConfigError, match="KEEL_CREDENTIAL_KEYS is not set"):
        configured_credentials(settings(credentials="postgres"))
    # A key configuration that parses; the database is only reached at the first lookup.
    source = configured_credentials(
        settings(credentials="postgres", credential_keys=KEYS, database_url="postgresql://nowhere/x")
    )
    assert isinstance(source, PostgresCredentials)
