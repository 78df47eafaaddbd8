"""Applying the ACL table (keel.acl) to a broker: SCRAM users, then ACLs; and a principal's client settings.

Run by the operator tooling (`keel acl --apply`, `keel up`, the test stack) with a principal that may
alter users and ACLs: the broker's super user.
"""

from __future__ import annotations

import os

from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialAlteration,
    UserScramCredentialUpsertion,
)

from keel.acl import TABLE, Grant, all_bindings, grant_of, principal_password
from keel.settings import Settings

SCRAM_ITERATIONS = 4096


def upsert_users(
    admin: AdminClient, seed: str, table: tuple[Grant, ...] = TABLE, timeout: float = 30.0
) -> None:
    """Create (or reset) every principal's SCRAM-SHA-512 credential, its password derived from `seed`."""
    upserts: list[UserScramCredentialAlteration] = [
        UserScramCredentialUpsertion(
            g.user,
            ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS),
            principal_password(seed, g.principal).encode(),
            os.urandom(16),
        )
        for g in table
    ]
    for fut in admin.alter_user_scram_credentials(upserts).values():
        fut.result(timeout)


Key = tuple[
    ResourceType | str | int,
    str,
    ResourcePatternType | str | int,
    str,
    str,
    AclOperation | str | int,
    AclPermissionType | str | int,
]


def _key(b: AclBinding) -> Key:
    """A binding's fields in AclBinding's (and AclBindingFilter's) argument order: its identity."""
    return (
        b.restype,
        b.name,
        b.resource_pattern_type,
        b.principal,
        b.host,
        b.operation,
        b.permission_type,
    )


def apply_acls(
    admin: AdminClient, table: tuple[Grant, ...] = TABLE, timeout: float = 30.0
) -> tuple[int, int]:
    """Make the broker's ACLs of the table's principals exactly the table's: create what is missing,
    delete what the table no longer grants. Returns (created, deleted)."""
    wanted = {_key(b): b for b in all_bindings(table)}
    have: dict[Key, AclBinding] = {}
    for g in table:
        any_of_user = AclBindingFilter(
            ResourceType.ANY,
            None,  # type: ignore[arg-type]  # None matches any name
            ResourcePatternType.ANY,
            f"User:{g.user}",
            None,  # type: ignore[arg-type]  # and any host
            AclOperation.ANY,
            AclPermissionType.ANY,
        )
        for b in admin.describe_acls(any_of_user).result(timeout):
            have[_key(b)] = b
    missing = [b for k, b in wanted.items() if k not in have]
    stale = [b for k, b in have.items() if k not in wanted]
    if missing:
        for fut in admin.create_acls(missing).values():
            fut.result(timeout)
    if stale:
        for fut in admin.delete_acls([AclBindingFilter(*_key(b)) for b in stale]).values():
            fut.result(timeout)
    return len(missing), len(stale)


def principal_env(settings: Settings, principal: str, bootstrap: str) -> dict[str, str]:
    """The environment a process started as `principal` gets: the authenticated listener, its own user
    and password; never the seed, so that it cannot derive another principal's password."""
    grant = grant_of(principal)
    return {
        "KEEL_KAFKA_BOOTSTRAP": bootstrap,
        "KEEL_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "KEEL_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KEEL_KAFKA_USERNAME": grant.user,
        "KEEL_KAFKA_PASSWORD": principal_password(settings.kafka_credential_seed, principal),
    }


# Variables a process started as a principal must not inherit from the operator tooling that starts it.
OPERATOR_ONLY_ENV = ("KEEL_KAFKA_SERVICE_BOOTSTRAP", "KEEL_KAFKA_CREDENTIAL_SEED")
