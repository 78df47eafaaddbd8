"""Tools as code in your own process: declare them with `@tool`, serve them with `keel-worker MODULE`.

    from keel.worker import ToolContext, ToolError, tool

    @tool("refund@1", idempotency="lookup", input=RefundIn, output=RefundOut)
    def refund(data: RefundIn, ctx: ToolContext) -> RefundOut: ...

    @refund.lookup
    def find_refund(data: RefundIn, ctx: ToolContext) -> RefundOut | None: ...

See docs/workers.md.
"""

from keel.worker.sdk import Tool, ToolContext, ToolError, tool

__all__ = ["Tool", "ToolContext", "ToolError", "tool"]
