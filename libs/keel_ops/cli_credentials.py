"""`keel credentials`: the tools' per-tenant credentials in the encrypted Postgres table.

A value is read from stdin (a prompt without echo on a terminal) or from an environment variable
(--from-env), never from an argument: arguments land in shell history and in `ps`. Nothing here prints a
value.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys

from keel.credstore import CredentialSettings, PostgresCredentials, postgres_credentials
from keel.settings import Settings

HELP = "tool credentials per tenant (encrypted in Postgres): set, list, delete, rotate"


def arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    s = _action(
        sub,
        "set",
        "store TENANT's credential NAME, read from stdin (prompted without echo on a terminal) or from "
        "--from-env VAR; never given as an argument. Tenant '*' is the shared row, used by tenants "
        "without one of their own.",
    )
    s.add_argument("tenant", help="the tenant id ('*' for the shared row)")
    s.add_argument("name", help="the credential's name, as tool definitions reference it")
    s.add_argument("--from-env", metavar="VAR", help="read the value from environment variable VAR")
    lst = _action(sub, "list", "list credentials: tenant, name, key id and dates, never values")
    lst.add_argument("tenant", nargs="?", help="only this tenant's")
    d = _action(sub, "delete", "delete TENANT's credential NAME")
    d.add_argument("tenant")
    d.add_argument("name")
    _action(
        sub,
        "rotate",
        "reseal every credential under the current key (KEEL_CREDENTIAL_KEY_ID), in one transaction; "
        "run it after adding a new key and making it current, before dropping the old one",
    )


def _action(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, text: str
) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=text, description=text)


def _value(args: argparse.Namespace) -> str:
    if args.from_env:
        found = os.environ.get(args.from_env)
        if found is None:
            raise ValueError(f"{args.from_env} is not set")
        given = found
    elif sys.stdin.isatty():
        given = getpass.getpass(f"value of {args.name!r} for tenant {args.tenant!r}: ")
    else:
        # `echo secret | keel credentials set ...`: the trailing newline is not part of the value.
        given = sys.stdin.read().rstrip("\r\n")
    if not given:
        raise ValueError(f"the value of {args.name!r} for tenant {args.tenant!r} is empty")
    return given


def _list(store: PostgresCredentials, tenant: str | None) -> None:
    entries = store.entries(tenant)
    ring = store.keyring
    for e in entries:
        if e.key_id not in ring.key_ids:
            mark = f"  (key {e.key_id} not configured: unreadable until it is added back)"
        elif e.key_id != ring.current:
            mark = f"  (not under the current key {ring.current}: run keel credentials rotate)"
        else:
            mark = ""
        print(f"{e.tenant_id:<20} {e.name:<24} {e.key_id:<12} {e.updated_at:%Y-%m-%d %H:%M:%S}{mark}")
    print(f"{len(entries)} credential(s); current key {ring.current}")


def run(_: Settings, args: argparse.Namespace) -> int:
    # Its own settings: the credential keys are read only by the commands that need them.
    store = postgres_credentials(CredentialSettings())
    try:
        if args.action == "set":
            store.put(args.tenant, args.name, _value(args))
            print(f"set {args.name!r} for tenant {args.tenant!r} (key {store.keyring.current})")
        elif args.action == "list":
            _list(store, args.tenant)
        elif args.action == "delete":
            if not store.delete(args.tenant, args.name):
                raise LookupError(f"no credential {args.name!r} for tenant {args.tenant!r}")
            print(f"deleted {args.name!r} of tenant {args.tenant!r}")
        elif args.action == "rotate":
            done = store.rotate()
            print(f"resealed {done.resealed} of {done.total} credential(s) under key {store.keyring.current}")
    finally:
        store.close()
    return 0
