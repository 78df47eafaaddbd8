"""The credential envelope: AES-256-GCM bound to the tenant and name, keys by id, rotation."""

from __future__ import annotations

import base64
import json
import os

import pytest

from keel.credstore.envelope import (
    CredentialConfigError,
    CredentialDecryptError,
    CredentialKeyError,
    Keyring,
    Sealed,
)

SECRET = "sk_live_do-not-print-me"


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def keys(*ids: str) -> dict[str, str]:
    return {i: b64(os.urandom(32)) for i in ids}


def ring(ids: tuple[str, ...] = ("k1",), current: str | None = "k1", given: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return Keyring.from_config(json.dumps(given or keys(*ids)), current)


def test_a_sealed_value_opens_for_its_own_tenant_and_name():
    r = ring()
    sealed = r.seal("acme", "email", SECRET)
    assert sealed.key_id == "k1" and len(sealed.nonce) == 12
    assert SECRET.encode() not in sealed.ciphertext
    assert r.open("acme", "email", sealed) == SECRET


def test_two_seals_of_one_value_differ():
    r = ring()
    a, b = r.seal("acme", "email", SECRET), r.seal("acme", "email", SECRET)
    assert a.nonce != b.nonce and a.ciphertext != b.ciphertext


@pytest.mark.parametrize(
    ("tenant", "name"),
    [("globex", "email"), ("acme", "crm"), ("*", "email"), ("acm", "eemail"), ("acme\x00", "email")],
)
def test_a_ciphertext_moved_to_another_tenant_or_name_does_not_open(tenant, name):
    r = ring()
    sealed = r.seal("acme", "email", SECRET)
    with pytest.raises(CredentialDecryptError) as err:
        r.open(tenant, name, sealed)
    assert SECRET not in str(err.value) and "k1" in str(err.value)


def test_the_associated_data_is_unambiguous():
    # ("ab", "c") and ("a", "bc") must not share associated data, or a row could be renamed into another.
    r = ring()
    sealed = r.seal("ab", "c", SECRET)
    with pytest.raises(CredentialDecryptError):
        r.open("a", "bc", sealed)


@pytest.mark.parametrize("part", ["ciphertext", "nonce"])
def test_a_tampered_row_does_not_open(part):
    r = ring()
    sealed = r.seal("acme", "email", SECRET)
    raw = bytearray(getattr(sealed, part))
    raw[0] ^= 0x01
    tampered = Sealed(**{**sealed.__dict__, part: bytes(raw)})
    with pytest.raises(CredentialDecryptError, match="email.*acme"):
        r.open("acme", "email", tampered)


def test_an_unknown_key_id_names_the_row_and_the_key_never_the_secret():
    old = ring(("k0",), "k0")
    sealed = old.seal("acme", "email", SECRET)
    new = ring(("k1",), "k1")
    with pytest.raises(CredentialKeyError) as err:
        new.open("acme", "email", sealed)
    message = str(err.value)
    assert "k0" in message and "acme" in message and "email" in message and SECRET not in message


@pytest.mark.parametrize(
    ("config", "current", "match"),
    [
        (None, None, "KEEL_CREDENTIAL_KEYS is not set"),
        ("", None, "KEEL_CREDENTIAL_KEYS is not set"),
        ("not json", None, "not a JSON object"),
        ('["a"]', None, "not a JSON object"),
        ("{}", None, "no keys"),
        (json.dumps({"k1": b64(os.urandom(16))}), "k1", "16 bytes.*32"),
        (json.dumps({"k1": "%%%not-base64"}), "k1", "not base64"),
        (json.dumps({"k1": b64(os.urandom(32))}), "k2", "KEEL_CREDENTIAL_KEY_ID 'k2' is not"),
        (json.dumps(keys("k1", "k2")), None, "KEEL_CREDENTIAL_KEY_ID is not set"),
    ],
)
def test_bad_key_configuration_is_refused_clearly(config, current, match):
    with pytest.raises(CredentialConfigError, match=match) as err:
        Keyring.from_config(config, current)
    if config and config.startswith("{") and len(config) > 2:
        for value in json.loads(config).values():
            assert value not in str(err.value)  # the key material is never echoed


def test_one_key_needs_no_current_id():
    r = Keyring.from_config(json.dumps(keys("only")), None)
    assert r.current == "only"


def test_rotation_reseals_under_the_current_key_and_old_rows_stay_readable_until_then():
    given = keys("k1", "k2")
    before = Keyring.from_config(json.dumps({"k1": given["k1"]}), "k1")
    sealed = before.seal("acme", "email", SECRET)
    during = Keyring.from_config(json.dumps(given), "k2")  # k2 added and made current, k1 kept
    assert during.open("acme", "email", sealed) == SECRET
    assert during.needs_rotation(sealed)
    rotated = during.reseal("acme", "email", sealed)
    assert rotated.key_id == "k2" and not during.needs_rotation(rotated)
    after = Keyring.from_config(json.dumps({"k2": given["k2"]}), "k2")  # k1 dropped
    assert after.open("acme", "email", rotated) == SECRET
    with pytest.raises(CredentialKeyError):
        after.open("acme", "email", sealed)


def test_reseal_keeps_the_binding():
    given = keys("k1", "k2")
    r = Keyring.from_config(json.dumps(given), "k2")
    sealed = Keyring.from_config(json.dumps(given), "k1").seal("acme", "email", SECRET)
    rotated = r.reseal("acme", "email", sealed)
    with pytest.raises(CredentialDecryptError):
        r.open("globex", "email", rotated)


def test_the_keyring_never_shows_its_keys():
    given = keys("k1")
    r = Keyring.from_config(json.dumps(given), "k1")
    assert given["k1"] not in repr(r) and given["k1"] not in str(r)
