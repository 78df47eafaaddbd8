"""The idempotency modes of the tools built into Keel, by tool name: what the scheduler retries by.

The adapters implement these modes (each adapter declares its own; a unit test holds the two equal);
the scheduler needs them to judge an attempt whose report never came back. Kept here, in the runtime
library, so that no service imports another. Temporary and deliberately minimal: registered tool
definitions will carry each tool's mode and replace this table.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from keel.vocab import LOOKUP, PROVIDER_KEY, IdempotencyMode

BUILTIN_TOOL_MODES: Final[Mapping[str, IdempotencyMode]] = MappingProxyType(
    {"email@1": PROVIDER_KEY, "crm@1": LOOKUP}
)


def idempotency_mode(tool: str) -> IdempotencyMode | None:
    """The mode of a built-in tool (`name@version`); None for a tool Keel does not know, which the
    scheduler reads as "none", the safe reading."""
    return BUILTIN_TOOL_MODES.get(tool)
