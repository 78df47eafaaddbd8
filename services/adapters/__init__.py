"""Tool adapters: tools defined as data (tools/*.yaml) served by one HTTP adapter, and the call that never
double-sends."""

from keel.vocab import FailureClass
from services.adapters.base import Adapter, ContractViolation, HttpCall, ToolResult
from services.adapters.catalog import ADAPTERS, UnknownTool, get_adapter
from services.adapters.client import call_tool
from services.adapters.config import AdapterSettings
from services.adapters.http_tool import HttpToolAdapter

__all__ = [
    "ADAPTERS",
    "Adapter",
    "AdapterSettings",
    "ContractViolation",
    "FailureClass",
    "HttpCall",
    "HttpToolAdapter",
    "ToolResult",
    "UnknownTool",
    "call_tool",
    "get_adapter",
]
