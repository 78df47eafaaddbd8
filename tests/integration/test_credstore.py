"""The encrypted credential table on the real PostgreSQL: a tenant only ever reads its own rows."""

from __future__ import annotations

import json
from collections.abc import Iterator

import psycopg
import pytest
from credstore_db import CredDb, credential_db, keyring, new_key, with_search_path

from keel.credstore import (
    SHARED_TENANT,
    CredentialDecryptError,
    CredentialError,
    CredentialKeyError,
    CredentialUnavailable,
    PostgresCredentials,
)

pytestmark = pytest.mark.integration
K1, K2 = new_key(), new_key()


@pytest.fixture
def cdb(stack) -> Iterator[CredDb]:
    yield from credential_db(stack)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_set_get_list_delete(cdb):
    store = cdb.store(keyring({"k1": K1}, "k1"))
    store.put("acme", "stripe", "sk_acme")
    store.put("acme", "email", "em_acme")
    store.put("acme", "stripe", "sk_acme_2")  # replacing a value
    assert store.lookup("acme", "stripe") == "sk_acme_2"
    entries = store.entries()
    assert [(e.tenant_id, e.name, e.key_id) for e in entries] == [
        ("acme", "email", "k1"),
        ("acme", "stripe", "k1"),
    ]
    assert entries[1].updated_at >= entries[1].created_at
    assert store.delete("acme", "stripe") is True
    assert store.delete("acme", "stripe") is False
    assert store.lookup("acme", "stripe") is None
    # Only ciphertext is stored.
    assert all(b"em_acme" not in bytes(ct) for *_, ct in cdb.rows())


def test_tenant_a_never_reads_tenant_bs_credential(cdb):
    store = cdb.store(keyring({"k1": K1}, "k1"))
    store.put("acme", "email", "acme-email")
    store.put("globex", "email", "globex-email")
    store.put("globex", "billing", "globex-billing")  # a name only globex has
    assert store.lookup("acme", "email") == "acme-email"
    assert store.lookup("globex", "email") == "globex-email"
    assert store.lookup("acme", "billing") is None
    assert store.lookup("initech", "billing") is None
    assert store.lookup("", "billing") is None
    assert store.entries("acme") == [e for e in store.entries() if e.tenant_id == "acme"]
    assert {e.name for e in store.entries("acme")} == {"email"}


def test_a_ciphertext_copied_into_another_tenants_row_does_not_decrypt(cdb):
    store = cdb.store(keyring({"k1": K1}, "k1"), ttl_s=0)
    store.put("globex", "stripe", "globex-secret")
    store.put("acme", "stripe", "acme-secret")
    # Someone with write access to the table copies globex's sealed value into acme's row.
    cdb.conn.execute(
        "UPDATE tool_credentials AS a SET key_id = g.key_id, nonce = g.nonce, ciphertext = g.ciphertext "
        "FROM tool_credentials AS g WHERE a.tenant_id = 'acme' AND g.tenant_id = 'globex' "
        "AND a.name = 'stripe' AND g.name = 'stripe'"
    )
    with pytest.raises(CredentialDecryptError, match="'stripe' of tenant 'acme'") as err:
        store.lookup("acme", "stripe")
    assert "globex-secret" not in str(err.value)
    # Or inserts it as acme's row for a name acme never had.
    cdb.conn.execute(
        "INSERT INTO tool_credentials (tenant_id, name, key_id, nonce, ciphertext) "
        "SELECT 'acme', 'billing', key_id, nonce, ciphertext FROM tool_credentials "
        "WHERE tenant_id = 'globex' AND name = 'stripe'"
    )
    with pytest.raises(CredentialDecryptError):
        store.lookup("acme", "billing")


def test_a_tampered_row_and_an_unknown_key_are_named(cdb):
    store = cdb.store(keyring({"k1": K1}, "k1"), ttl_s=0)
    store.put("acme", "stripe", "acme-secret")
    store.put("acme", "email", "acme-email")
    cdb.conn.execute(
        "UPDATE tool_credentials SET ciphertext = set_byte(ciphertext, 0, get_byte(ciphertext, 0) # 1) "
        "WHERE tenant_id = 'acme' AND name = 'stripe'"
    )
    with pytest.raises(CredentialDecryptError, match="'stripe' of tenant 'acme'"):
        store.lookup("acme", "stripe")
    cdb.conn.execute("UPDATE tool_credentials SET key_id = 'k0' WHERE name = 'email'")
    with pytest.raises(CredentialKeyError, match="'email' of tenant 'acme'.*key id 'k0'") as err:
        store.lookup("acme", "email")
    assert "acme-email" not in str(err.value)


def test_the_explicit_shared_row_serves_tenants_without_their_own(cdb):
    ring = keyring({"k1": K1}, "k1")
    store = cdb.store(ring)
    store.put(SHARED_TENANT, "crm", "shared-crm")
    store.put("acme", "crm", "acme-crm")
    assert store.lookup("acme", "crm") == "acme-crm"  # own row first
    assert store.lookup("globex", "crm") == "shared-crm"
    assert cdb.store(ring, shared=False).lookup("globex", "crm") is None


def test_rotation_reseals_every_row_under_the_current_key(cdb):
    old = cdb.store(keyring({"k1": K1}, "k1"))
    for tenant, name in [("acme", "email"), ("acme", "stripe"), ("globex", "email"), ("*", "crm")]:
        old.put(tenant, name, f"{tenant}-{name}")
    # Step 1-2: k2 added everywhere and made current; rows under k1 stay readable, new writes use k2.
    during = cdb.store(keyring({"k1": K1, "k2": K2}, "k2"), ttl_s=0)
    during.put("initech", "email", "initech-email")
    assert during.lookup("acme", "stripe") == "acme-stripe"
    assert sorted({e.key_id for e in during.entries()}) == ["k1", "k2"]
    before = {(t, n): (bytes(nonce), bytes(ct)) for t, n, _, nonce, ct in cdb.rows()}
    # Step 3: rotate.
    assert during.rotate() == (4, 5)
    assert {e.key_id for e in during.entries()} == {"k2"}
    after = {(t, n): (bytes(nonce), bytes(ct)) for t, n, _, nonce, ct in cdb.rows()}
    assert after[("initech", "email")] == before[("initech", "email")]  # already current: untouched
    assert all(after[k] != before[k] for k in before if k != ("initech", "email"))
    assert during.rotate() == (0, 5)  # nothing left to do
    # Step 4: k1 dropped; every value still reads, each for its own tenant only.
    new = cdb.store(keyring({"k2": K2}, "k2"))
    assert new.lookup("acme", "stripe") == "acme-stripe"
    assert new.lookup("globex", "email") == "globex-email"
    assert new.lookup("globex", "crm") == "*-crm"
    assert new.lookup("globex", "stripe") is None


def test_a_rotation_that_meets_an_unreadable_row_changes_nothing(cdb):
    store = cdb.store(keyring({"k1": K1}, "k1"))
    store.put("acme", "email", "acme-email")
    store.put("globex", "email", "globex-email")
    cdb.conn.execute("UPDATE tool_credentials SET key_id = 'lost' WHERE tenant_id = 'globex'")
    before = cdb.rows()
    with pytest.raises(CredentialKeyError, match="'email' of tenant 'globex'.*'lost'"):
        cdb.store(keyring({"k1": K1, "k2": K2}, "k2")).rotate()
    assert cdb.rows() == before


def test_the_cache_is_short_per_tenant_and_cleared_by_own_writes(cdb):
    ring, clock = keyring({"k1": K1}, "k1"), Clock()
    reader = cdb.store(ring, ttl_s=5.0, clock=clock)
    writer = cdb.store(ring)
    writer.put("acme", "email", "v1")
    writer.put("globex", "email", "g1")
    assert reader.lookup("acme", "email") == "v1"
    assert reader.lookup("globex", "email") == "g1"  # same name, other tenant: never the cached acme
    assert reader.lookup("initech", "email") is None
    writer.put("acme", "email", "v2")
    writer.put("initech", "email", "i1")
    clock.now += 4.9
    assert reader.lookup("acme", "email") == "v1"  # within the TTL another process's change is unseen
    assert reader.lookup("initech", "email") is None
    clock.now += 0.2
    assert reader.lookup("acme", "email") == "v2"
    assert reader.lookup("initech", "email") == "i1"
    reader.delete("acme", "email")  # a write through this instance is seen at once
    assert reader.lookup("acme", "email") is None


def test_a_missing_table_says_to_migrate(stack):
    url = with_search_path(stack.db_url(), "cred_absent_schema")
    store = PostgresCredentials(lambda: psycopg.connect(url, autocommit=True), keyring({"k1": K1}, "k1"))
    with pytest.raises(CredentialError, match="keel migrate"):
        store.lookup("acme", "email")


def test_a_dropped_connection_is_reopened_for_the_next_lookup(cdb):
    store = cdb.store(keyring({"k1": K1}, "k1"), ttl_s=0)
    store.put("acme", "email", "acme-email")
    assert store.lookup("acme", "email") == "acme-email"
    assert cdb.cut_connections() == 1
    assert store.lookup("acme", "email") == "acme-email"  # a read is retried once on a new connection


def test_an_unreachable_database_is_unavailable_not_a_missing_credential(tmp_path):
    url = f"postgresql://nobody@/postgres?host={tmp_path}&connect_timeout=2"  # no server listens there
    store = PostgresCredentials(lambda: psycopg.connect(url, autocommit=True), keyring({"k1": K1}, "k1"))
    with pytest.raises(CredentialUnavailable, match="cannot reach"):
        store.lookup("acme", "email")
    assert not isinstance(CredentialUnavailable("x"), CredentialError)  # transient, not a bad credential


def test_the_configured_postgres_source_reads_what_the_operator_set(cdb):
    from keel.credstore import CredentialSettings, configured_credentials

    settings = CredentialSettings(  # type: ignore[call-arg]
        credentials="postgres",
        credential_keys=json.dumps({"k1": K1, "k2": K2}),
        credential_key_id="k2",
        database_url=cdb.url,
    )
    cdb.store(keyring({"k1": K1}, "k1")).put("acme", "stripe", "acme-stripe")
    cdb.store(keyring({"k1": K1}, "k1")).put("globex", "billing", "globex-billing")
    source = configured_credentials(settings)
    assert source.lookup("acme", "stripe") == "acme-stripe"
    assert source.lookup("acme", "billing") is None
    assert source.lookup("globex", "stripe") is None
