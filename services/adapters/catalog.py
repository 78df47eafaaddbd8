"""The tools this deployment serves, by name (`name@version`): one adapter per loaded HTTP definition
(tools served by tool workers have their own command topics; see keel.worker)."""

from __future__ import annotations

from keel.tooldefs import ToolRegistry, UnknownTool
from services.adapters.base import Adapter
from services.adapters.http_tool import HttpToolAdapter

__all__ = ["ADAPTERS", "UnknownTool", "adapters_for", "get_adapter"]


def adapters_for(registry: ToolRegistry) -> dict[str, Adapter]:
    definitions = [registry.get(tool) for tool in registry.names()]
    return {d.tool: HttpToolAdapter(d) for d in definitions if d.request is not None}


# Loaded at import: a bad definition fails the service's start loudly, with file, line and path.
ADAPTERS: dict[str, Adapter] = adapters_for(ToolRegistry.configured())


def get_adapter(tool: str) -> Adapter:
    try:
        return ADAPTERS[tool]
    except KeyError:
        raise UnknownTool(f"unknown tool {tool!r}; known tools: {sorted(ADAPTERS)}") from None
