"""`keel acl`: print the broker's ACL table (keel.acl); `--apply` creates its users and ACLs on the broker."""

from __future__ import annotations

import argparse

from keel.acl import table_lines
from keel.settings import Settings

HELP = (
    "print who may read and write what on the broker (keel.acl); --apply: create the SCRAM users and "
    "ACLs (as the broker's super user) and remove ACLs the table no longer grants"
)


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--apply", action="store_true", help="apply the table to the broker")


def run(settings: Settings, args: argparse.Namespace) -> int:
    from keel_ops.stack import apply_acl_table, say

    for line in table_lines():
        print(line)
    if args.apply:
        added, removed = apply_acl_table(settings)
        say(f"applied to {settings.kafka_bootstrap}: {added} ACLs added, {removed} removed; users upserted")
    return 0
