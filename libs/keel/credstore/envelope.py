"""The credential envelope: AES-256-GCM under a key chosen by id, bound to the row's tenant and name.

A sealed value is (key_id, nonce, ciphertext). The tenant id and the credential's name are the
associated data: a ciphertext copied into another tenant's row, or renamed, fails to authenticate, so
a database write alone can never hand tenant A's secret to tenant B. Errors name the row and the key
id, never the secret or the key material.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # GCM's standard nonce; random per seal (a key seals far fewer than 2^32 values)
# FROZEN: the associated data's format. Changing it makes every stored row unreadable.
_AAD_LABEL = "keel.tool-credential.v1"
_NEW_KEY_HINT = "python -c 'import base64, os; print(base64.b64encode(os.urandom(32)).decode())'"


class CredentialError(RuntimeError):
    """A credential that cannot be read or written: configuration, key or ciphertext."""


class CredentialConfigError(CredentialError):
    """KEEL_CREDENTIAL_KEYS / KEEL_CREDENTIAL_KEY_ID are missing or malformed."""


class CredentialKeyError(CredentialError):
    """A row is sealed under a key id the configuration does not hold."""


class CredentialDecryptError(CredentialError):
    """A row's ciphertext does not authenticate: tampered, or moved from another tenant or name."""


class CredentialUnavailable(RuntimeError):
    """The credential store could not be reached: transient (retry later), unlike a CredentialError,
    which no retry mends."""


@dataclass(frozen=True)
class Sealed:
    key_id: str
    nonce: bytes
    ciphertext: bytes  # includes GCM's 16-byte tag


def associated_data(tenant_id: str, name: str) -> bytes:
    """JSON of a list: unambiguous for any strings (("ab", "c") and ("a", "bc") differ)."""
    return json.dumps([_AAD_LABEL, tenant_id, name], ensure_ascii=False).encode()


def _decode_key(key_id: str, encoded: object) -> bytes:
    if not isinstance(encoded, str):
        raise CredentialConfigError(f"credential key {key_id!r} in KEEL_CREDENTIAL_KEYS is not a string")
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise CredentialConfigError(
            f"credential key {key_id!r} in KEEL_CREDENTIAL_KEYS is not base64 (make one with {_NEW_KEY_HINT})"
        ) from None
    if len(raw) != KEY_BYTES:
        raise CredentialConfigError(
            f"credential key {key_id!r} is {len(raw)} bytes; AES-256-GCM needs {KEY_BYTES} "
            f"(make one with {_NEW_KEY_HINT})"
        )
    return raw


class Keyring:
    """Every configured key by id; `current` is the one new values (and rotation) are sealed under."""

    def __init__(self, keys: Mapping[str, bytes], current: str) -> None:
        if current not in keys:
            raise CredentialConfigError(
                f"KEEL_CREDENTIAL_KEY_ID {current!r} is not a key id in KEEL_CREDENTIAL_KEYS"
            )
        self._aead = {key_id: AESGCM(raw) for key_id, raw in keys.items()}
        self.current = current

    @classmethod
    def from_config(cls, keys_json: str | None, current: str | None) -> Keyring:
        """From KEEL_CREDENTIAL_KEYS (`{"key_id": "base64 of 32 bytes"}`) and KEEL_CREDENTIAL_KEY_ID
        (optional when there is a single key)."""
        if not keys_json:
            raise CredentialConfigError(
                'KEEL_CREDENTIAL_KEYS is not set: it must be {"key_id": "<base64 of 32 random bytes>"} '
                f"(make a key with {_NEW_KEY_HINT})"
            )
        try:
            given = json.loads(keys_json)
        except ValueError:
            given = None
        if not isinstance(given, dict):
            raise CredentialConfigError("KEEL_CREDENTIAL_KEYS is not a JSON object of key id -> base64 key")
        if not given:
            raise CredentialConfigError("KEEL_CREDENTIAL_KEYS holds no keys")
        keys = {str(key_id): _decode_key(str(key_id), encoded) for key_id, encoded in given.items()}
        if current is None:
            if len(keys) != 1:
                raise CredentialConfigError(
                    f"KEEL_CREDENTIAL_KEY_ID is not set and KEEL_CREDENTIAL_KEYS holds {len(keys)} keys "
                    f"({', '.join(sorted(keys))}): name the one new values are sealed under"
                )
            current = next(iter(keys))
        return cls(keys, current)

    @property
    def key_ids(self) -> list[str]:
        return sorted(self._aead)

    def __repr__(self) -> str:
        return f"Keyring(key_ids={self.key_ids}, current={self.current!r})"

    def seal(self, tenant_id: str, name: str, value: str) -> Sealed:
        nonce = os.urandom(NONCE_BYTES)
        aad = associated_data(tenant_id, name)
        ciphertext = self._aead[self.current].encrypt(nonce, value.encode(), aad)
        return Sealed(self.current, nonce, ciphertext)

    def open(self, tenant_id: str, name: str, sealed: Sealed) -> str:
        aead = self._aead.get(sealed.key_id)
        if aead is None:
            raise CredentialKeyError(
                f"credential {name!r} of tenant {tenant_id!r} is sealed with key id {sealed.key_id!r}, "
                f"which KEEL_CREDENTIAL_KEYS does not hold (it holds {', '.join(self.key_ids)}): "
                "put that key back to read or rotate this credential"
            )
        try:
            plain = aead.decrypt(sealed.nonce, sealed.ciphertext, associated_data(tenant_id, name))
        except InvalidTag:
            raise CredentialDecryptError(
                f"credential {name!r} of tenant {tenant_id!r} (key id {sealed.key_id!r}) does not "
                "authenticate: the row was altered or copied from another tenant or name; set it again"
            ) from None
        return plain.decode()

    def needs_rotation(self, sealed: Sealed) -> bool:
        return sealed.key_id != self.current

    def reseal(self, tenant_id: str, name: str, sealed: Sealed) -> Sealed:
        """The same value under the current key (a fresh nonce), still bound to its tenant and name."""
        return self.seal(tenant_id, name, self.open(tenant_id, name, sealed))
