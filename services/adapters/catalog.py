"""The tools this deployment serves, by name (`name@version`): one adapter per loaded HTTP definition
(tools served by tool workers have their own command topics; see keel.worker)."""

from __future__ import annotations

from keel.definitions.tools import ToolView
from keel.tooldefs import ToolRegistry, UnknownTool
from services.adapters.base import Adapter
from services.adapters.http_tool import HttpToolAdapter

__all__ = ["ADAPTERS", "UnknownTool", "adapters_for", "follow", "get_adapter"]


def adapters_for(registry: ToolRegistry) -> dict[str, Adapter]:
    definitions = [registry.get(tool) for tool in registry.names()]
    return {d.tool: HttpToolAdapter(d) for d in definitions if d.request is not None}


# Loaded at import: a bad definition fails the service's start loudly, with file, line and path.
ADAPTERS: dict[str, Adapter] = adapters_for(ToolRegistry.configured())


_VIEW: list[ToolView] = []  # set by the service: the files plus the tools registered at runtime
_BUILT: dict[tuple[str, str], Adapter] = {}  # by tool and digest: built on first use


def follow(view: ToolView) -> None:
    _VIEW[:] = [view]


def get_adapter(tool: str) -> Adapter:
    if _VIEW:  # the view decides (a registered record wins over a differing file); raises UnknownTool
        loaded = _VIEW[0].loaded(tool)
        if loaded.definition.request is None:  # served by its worker group, on its own topic
            raise UnknownTool(f"{tool} is served by worker group {loaded.definition.worker!r}, not here")
        if (tool, loaded.digest) not in _BUILT:
            _BUILT[(tool, loaded.digest)] = HttpToolAdapter(loaded.definition)
        return _BUILT[(tool, loaded.digest)]
    try:
        return ADAPTERS[tool]
    except KeyError:
        raise UnknownTool(f"unknown tool {tool!r}; known tools: {sorted(ADAPTERS)}") from None
