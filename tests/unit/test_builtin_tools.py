"""The table of built-in tool modes the scheduler retries by says what the adapters implement."""

from keel.builtin_tools import BUILTIN_TOOL_MODES, idempotency_mode
from services.adapters.catalog import ADAPTERS


def test_the_table_holds_each_adapter_and_its_declared_mode():
    assert dict(BUILTIN_TOOL_MODES) == {tool: a.idempotency_mode for tool, a in ADAPTERS.items()}


def test_an_unknown_tool_has_no_mode_which_the_scheduler_reads_as_none():
    assert idempotency_mode("refund@1") is None
    assert idempotency_mode("email@1") == "provider_key" and idempotency_mode("crm@1") == "lookup"
