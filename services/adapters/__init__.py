"""Tool adapters: versioned contracts with external systems, and the call that never double-sends."""

from keel.vocab import FailureClass
from services.adapters.base import Adapter, HttpCall, ToolResult
from services.adapters.catalog import ADAPTERS, UnknownTool, get_adapter
from services.adapters.client import call_tool
from services.adapters.config import AdapterSettings

__all__ = [
    "ADAPTERS",
    "Adapter",
    "AdapterSettings",
    "FailureClass",
    "HttpCall",
    "ToolResult",
    "UnknownTool",
    "call_tool",
    "get_adapter",
]
