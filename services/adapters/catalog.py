"""The adapters this deployment knows, by tool name (`name@version`)."""

from __future__ import annotations

from typing import Any

from services.adapters.base import Adapter
from services.adapters.crm_v1 import CrmV1
from services.adapters.email_v1 import EmailV1

ADAPTERS: dict[str, Adapter[Any, Any]] = {a.tool: a for a in (EmailV1(), CrmV1())}


class UnknownTool(LookupError):
    """A tool name no adapter serves."""


def get_adapter(tool: str) -> Adapter[Any, Any]:
    try:
        return ADAPTERS[tool]
    except KeyError:
        raise UnknownTool(f"unknown tool {tool!r}; known tools: {sorted(ADAPTERS)}") from None
