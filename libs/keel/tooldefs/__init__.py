"""Tool definitions: the contract of each tool as data, loaded, validated and looked up by name@version."""

from keel.tooldefs.contract import Contract, json_path
from keel.tooldefs.credentials import (
    CredentialSource,
    MissingCredential,
    StaticCredentials,
    TenantCredentials,
)
from keel.tooldefs.load import ToolDefinitionError, load_definition, parse_definition
from keel.tooldefs.model import ToolDefinition
from keel.tooldefs.registry import LoadedTool, ToolRegistry, UnknownTool, digest, tool_dirs
from keel.vocab import IdempotencyMode

__all__ = [
    "Contract",
    "CredentialSource",
    "IdempotencyMode",
    "LoadedTool",
    "MissingCredential",
    "StaticCredentials",
    "TenantCredentials",
    "ToolDefinition",
    "ToolDefinitionError",
    "ToolRegistry",
    "UnknownTool",
    "digest",
    "json_path",
    "load_definition",
    "parse_definition",
    "tool_dirs",
]
