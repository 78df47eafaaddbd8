"""The placeholders of tool definitions: `{field}` (input), `{credential:NAME}`, `{idempotency_key}`."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_NAME = re.compile(r"^(credential:)?[A-Za-z_][A-Za-z0-9_]*$")
KEY = "idempotency_key"
CREDENTIAL = "credential:"


def placeholders(text: str) -> list[str]:
    """The placeholders of `text`, in order; a malformed one (`{}`, `{a b}`, a stray brace) raises."""
    refs = _PLACEHOLDER.findall(text)
    for ref in refs:
        if not _NAME.match(ref):
            raise ValueError(f"malformed placeholder {{{ref}}} in {text!r}")
    if "{" in _PLACEHOLDER.sub("", text) or "}" in _PLACEHOLDER.sub("", text):
        raise ValueError(f"unbalanced brace in {text!r}")
    return refs


def fields_of(refs: Iterable[str], key_allowed: bool) -> list[str]:
    """The input fields among `refs` (credentials excluded; the key too where it may be used)."""
    return [r for r in refs if not r.startswith(CREDENTIAL) and not (key_allowed and r == KEY)]


def credentials_of(text: str) -> list[str]:
    return [r.removeprefix(CREDENTIAL) for r in placeholders(text) if r.startswith(CREDENTIAL)]


def render(
    text: str,
    values: Mapping[str, Any],
    credential: Callable[[str], str] | None = None,
    url_part: bool = False,
) -> str:
    """`text` with its placeholders filled: input fields from `values` (percent-encoded inside a URL
    path, so an input can never add a path segment), credentials through `credential`."""

    def fill(match: re.Match[str]) -> str:
        ref = match.group(1)
        if ref.startswith(CREDENTIAL):
            if credential is None:
                raise ValueError(f"no credentials here for {{{ref}}}")
            return credential(ref.removeprefix(CREDENTIAL))
        value = values[ref]
        text_value = value if isinstance(value, str) else str(value)
        return quote(text_value, safe="") if url_part else text_value

    return _PLACEHOLDER.sub(fill, text)
