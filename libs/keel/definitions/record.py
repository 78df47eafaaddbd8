"""Definition records: identity (key, digest) and the rule that says which record of a version wins.

Pure: no broker here. The shell (keel.definitions.log) publishes and reads; this module decides.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


def canonical(content: Any) -> str:
    """Canonical JSON: sorted keys, no spaces, UTF-8 kept. Two definitions that parse to the same value
    have the same text, whatever their YAML looked like (comments, order, defaults left out)."""
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def digest(content_json: str) -> str:
    return "sha256:" + hashlib.sha256(content_json.encode()).hexdigest()


def record_key(kind: str, name: str, version: int, digest_: str) -> str:
    """FROZEN FORMAT `kind/name@version/digest`: the digest is part of the key so that compaction keeps
    every candidate for a version (a later, different record must never replace the first one)."""
    return f"{kind}/{name}@{version}/{digest_}"


@dataclass(frozen=True)
class Candidate:
    """One record read from the topic, with its place in the log."""

    kind: str
    name: str
    version: int
    digest: str
    offset: int
    content: str = ""
    applied_by: str = ""
    applied_at_ms: int = 0

    @property
    def identity(self) -> tuple[str, str, int]:
        return (self.kind, self.name, self.version)


def winners(records: Iterable[Candidate]) -> dict[tuple[str, str, int], Candidate]:
    """The definition of each kind/name@version: its FIRST record in log order (lowest offset). Every
    reader of the one-partition topic sees the same order, so every reader picks the same record, and
    a record published later (a concurrent apply of other content) can never displace it."""
    first: dict[tuple[str, str, int], Candidate] = {}
    for c in records:
        held = first.get(c.identity)
        if held is None or c.offset < held.offset:
            first[c.identity] = c
    return first


def refused(records: Iterable[Candidate]) -> list[Candidate]:
    """Records that lost to an earlier record of other content: refused applies, kept as evidence."""
    won = winners(records := list(records))
    return [c for c in records if c.digest != won[c.identity].digest]


@dataclass(frozen=True)
class Verdict:
    """What became of an apply: `created` (this record is the definition), `unchanged` (the same
    content was there already) or `conflict` (other content holds that version)."""

    outcome: str
    winner: Candidate

    @property
    def accepted(self) -> bool:
        return self.outcome != "conflict"


def verdict(records: Iterable[Candidate], mine: Candidate) -> Verdict:
    """Judge `mine` (already in `records`, with its offset) against everything before it."""
    won = winners(records)[mine.identity]
    if won.digest != mine.digest:
        return Verdict("conflict", won)
    return Verdict("created" if won.offset == mine.offset else "unchanged", won)
