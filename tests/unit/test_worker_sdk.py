"""The tool worker SDK (keel.worker): declaring a tool, its definition, and one call's classification —
the same outcomes an HTTP tool's call has, from a function instead of a provider's answer."""

from __future__ import annotations

import asyncio
import json
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import wait_for
from pydantic import BaseModel

import keel.events as ev
from keel.contracts import LedgerRecord, RunEvent, ToolCommand
from keel.schemas import REPO_ROOT
from keel.tooldefs import StaticCredentials, ToolDefinitionError, ToolRegistry, parse_definition
from keel.toolrun.result import Effect, ToolRequest
from keel.topics import TOOL_COMMANDS
from keel.txloop import Output, Record, Reject
from keel.worker import ToolContext, ToolError, tool
from keel.worker.cli import definitions_yaml, tools_of
from keel.worker.invoke import WorkerInvoker
from keel.worker.serve import WorkerProcessor
from services.executor.service import routes_of


class In(BaseModel):
    charge_id: str
    amount_cents: int


class Out(BaseModel):
    refund_id: str
    amount_cents: int


CREDS = StaticCredentials({"acme": {"payments": "acme-secret"}})
PAYLOAD = {"charge_id": "ch_1", "amount_cents": 5}


def request(deadline_ms: int | None = None, tenant: str = "acme", payload: Any = None) -> ToolRequest:
    return ToolRequest(payload or PAYLOAD, "key-1", Effect(tenant, "run-1", "refund"), deadline_ms)


def declare(fn: Any, mode: str = "provider_key", side_effects: bool = True, **kw: Any) -> Any:
    return tool("refund@1", idempotency=mode, input=In, output=Out, side_effects=side_effects, **kw)(fn)


def call(t: Any, **kw: Any) -> Any:
    return WorkerInvoker(t, CREDS, 5.0).invoke(request(**kw))


def refund(data: In, ctx: ToolContext) -> Out:
    """Refund a charge."""
    return Out(refund_id=f"re_{ctx.idempotency_key}", amount_cents=data.amount_cents)


# -- declaring --------------------------------------------------------------------------------------
def test_a_declaration_is_checked_when_made() -> None:
    with pytest.raises(ValueError, match="NAME@VERSION"):
        tool("refund", idempotency="none", input=In, output=Out)(refund)
    with pytest.raises(ValueError, match="idempotency must be one of"):
        tool("refund@1", idempotency="exactly_once", input=In, output=Out)(refund)
    with pytest.raises(ValueError, match="failure_class must be one of"):
        ToolError("x", "flaky")  # type: ignore[arg-type]

    class TwoIds(BaseModel):
        refund_id: str
        charge_id: str

    with pytest.raises(ValueError, match=r"external_id=\.\.\."):
        tool("refund@1", idempotency="none", input=In, output=TwoIds)(refund)


def test_a_lookup_tool_needs_its_lookup_before_it_is_served() -> None:
    t = declare(refund, "lookup")
    with pytest.raises(ValueError, match="needs a lookup"):
        t.check()
    t.lookup(lambda data, ctx: None)
    t.check()
    with pytest.raises(ValueError, match="only used with idempotency='lookup'"):
        declare(refund, "provider_key", lookup=lambda d, c: None).check()


def test_the_definition_is_a_valid_worker_tool_definition() -> None:
    t = declare(refund, "lookup", worker="payments", key_retention_s=3600)
    definition = parse_definition(t.definition())
    assert definition.worker == "payments" and definition.request is None
    assert definition.idempotency.mode == "lookup" and definition.idempotency.key_retention_s == 3600
    assert definition.external_id == "refund_id" and definition.description == "Refund a charge."
    assert definition.input_schema["required"] == ["charge_id", "amount_cents"]


def test_the_checked_in_definition_is_the_modules_own() -> None:
    # tests/tools/issue_refund.v1.yaml is what `keel-worker tests.workers.refunds --write-definitions`
    # wrote: the scheduler's view of the tool must never drift from the code.
    tools = tools_of("tests.workers.refunds")
    on_disk = yaml.safe_load((REPO_ROOT / "tests" / "tools" / "issue_refund.v1.yaml").read_text())
    assert [on_disk] == [yaml.safe_load(d) for d in definitions_yaml(tools).split("---\n")]


def test_a_definition_is_served_by_exactly_one_of_request_or_worker(tmp_path: Path) -> None:
    base = declare(refund, "none").definition()
    both = {**base, "request": {"path": "/v1/refunds"}}
    with pytest.raises(ToolDefinitionError, match="exactly one of `request`"):
        parse_definition(both)
    neither = {k: v for k, v in base.items() if k != "worker"}
    with pytest.raises(ToolDefinitionError, match="exactly one of `request`"):
        parse_definition(neither)
    keyed = {**base, "idempotency": {"mode": "provider_key", "header": "Idempotency-Key"}}
    with pytest.raises(ToolDefinitionError, match="mechanism is its code: no header"):
        parse_definition(keyed)
    with pytest.raises(ToolDefinitionError, match="pattern"):
        parse_definition({**base, "worker": "Payments Team"})


def test_the_executor_routes_a_worker_tool_to_its_groups_topic(tmp_path: Path) -> None:
    (tmp_path / "refund.v1.yaml").write_text(
        yaml.safe_dump(declare(refund, "none", worker="pay").definition())
    )
    route = routes_of(ToolRegistry.from_dirs([REPO_ROOT / "tools", tmp_path]))
    assert route("refund@1") == "keel.tool-commands.pay"
    assert route("email@1") == TOOL_COMMANDS and route("sms@9") == TOOL_COMMANDS


# -- one call ----------------------------------------------------------------------------------------
def test_a_success_carries_the_validated_output_and_the_providers_id() -> None:
    result = call(declare(refund))
    assert result.ok and result.external_id == "re_key-1" and result.request_sent
    assert result.output == {"refund_id": "re_key-1", "amount_cents": 5}


def test_an_async_tool_is_awaited_and_cut_at_its_timeout() -> None:
    async def quick(data: In, ctx: ToolContext) -> dict[str, Any]:
        """Refund."""
        return {"refund_id": "re_a", "amount_cents": 1}

    async def stuck(data: In, ctx: ToolContext) -> dict[str, Any]:
        """Refund."""
        await asyncio.sleep(5)
        return {}

    assert call(declare(quick)).external_id == "re_a"
    slow = WorkerInvoker(declare(stuck, timeout_s=0.05), CREDS, 5.0).invoke(request())
    assert not slow.ok and slow.failure_class == "unknown_outcome"  # it may have acted before the cut


def test_tool_errors_say_their_failure_class() -> None:
    def limited(data: In, ctx: ToolContext) -> Out:
        """Refund."""
        raise ToolError("slow down", "rate_limited", retry_after_ms=1500)

    result = call(declare(limited))
    assert (result.failure_class, result.retry_after_ms, result.request_sent) == ("rate_limited", 1500, False)
    assert "refund@1: ToolError: slow down" == result.error


def test_an_unexpected_exception_is_an_unknown_outcome_for_a_write_and_transient_for_a_read() -> None:
    def broken(data: In, ctx: ToolContext) -> Out:
        """Refund."""
        raise TimeoutError("read timed out")

    write = call(declare(broken))
    assert write.failure_class == "unknown_outcome" and write.request_sent
    read = call(declare(broken, side_effects=False))
    assert read.failure_class == "transient"


def test_credentials_are_the_calls_tenants_only() -> None:
    seen: list[str] = []

    def uses_secret(data: In, ctx: ToolContext) -> Out:
        """Refund."""
        seen.append(ctx.credentials("payments"))
        return Out(refund_id="re_1", amount_cents=1)

    assert call(declare(uses_secret)).ok and seen == ["acme-secret"]
    other = call(declare(uses_secret), tenant="globex")  # globex has no secret; acme's is never read
    assert other.failure_class == "auth" and "globex" in (other.error or "") and seen == ["acme-secret"]


def test_a_broken_answer_is_validation_with_its_json_path_and_the_effect_accepted() -> None:
    def drifted(data: In, ctx: ToolContext) -> dict[str, Any]:
        """Refund."""
        return {"refund_id": None, "amount_cents": 5}

    result = call(declare(drifted))
    assert result.failure_class == "validation" and result.effect_accepted
    assert "$.refund_id:" in (result.error or "") and result.evidence == {
        "refund_id": None,
        "amount_cents": 5,
    }

    def empty_id(data: In, ctx: ToolContext) -> dict[str, Any]:
        """Refund."""
        return {"refund_id": "", "amount_cents": 5}

    assert "$.refund_id: the provider's id of the effect is missing" in (call(declare(empty_id)).error or "")


def test_a_bad_input_is_validation_and_the_function_never_runs() -> None:
    ran: list[int] = []
    t = declare(lambda d, c: ran.append(1), description="Refund.")
    result = call(t, payload={"charge_id": "ch_1", "amount_cents": "many"})
    assert result.failure_class == "validation" and "$.amount_cents" in (result.error or "") and not ran


def test_lookup_mode_asks_first_and_writes_only_when_nothing_was_found() -> None:
    writes: list[str] = []
    found: dict[str, Any] = {}

    def write(data: In, ctx: ToolContext) -> Out:
        """Refund."""
        writes.append(ctx.idempotency_key)
        return Out(refund_id="re_new", amount_cents=5)

    t = declare(write, "lookup")
    t.lookup(lambda data, ctx: found.get(ctx.idempotency_key))
    assert call(t).external_id == "re_new" and writes == ["key-1"]
    found["key-1"] = {"refund_id": "re_new", "amount_cents": 5}
    again = call(t)
    assert again.ok and again.replayed and not again.request_sent and writes == ["key-1"]

    def cannot_ask(data: In, ctx: ToolContext) -> None:
        raise ConnectionError("lookup down")

    t.lookup(cannot_ask)
    asked = call(t)
    assert asked.failure_class == "transient" and "lookup failed" in (asked.error or "")
    assert writes == ["key-1"]  # could not ask: nothing written


def test_nothing_runs_past_the_deadline() -> None:
    ran: list[int] = []
    result = call(declare(lambda d, c: ran.append(1), description="R."), deadline_ms=ev.now_ms() - 1)
    assert result.blocked_reason and "deadline passed" in result.blocked_reason and not ran


# -- the worker's processor: the tool runner's semantics ------------------------------------------
def command(tool_name: str = "refund@1", key: str = "acme|w|run-1|refund|key-1") -> ToolCommand:
    return ToolCommand(
        command_id="c1",
        run_id="run-1",
        tenant_id="acme",
        workflow="w",
        workflow_version=1,
        step="refund",
        attempt=1,
        tool=tool_name,
        payload_json=json.dumps(PAYLOAD),
        idempotency_key=key,
        issued_at=datetime.now(UTC),
    )


def handled(processor: WorkerProcessor, cmd: ToolCommand) -> list[Any]:
    return list(processor.handle(Record("keel.tool-commands.pay", 0, 0, cmd.run_id, cmd, 0)))


def test_the_worker_commits_tool_called_before_the_call_and_the_result_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KEEL_TOOL_CREDENTIALS", json.dumps({"acme": {"payments": "s"}}))
    calls: list[str] = []

    def counted(data: In, ctx: ToolContext) -> Out:
        """Refund."""
        calls.append(ctx.idempotency_key)
        return Out(refund_id="re_1", amount_cents=5)

    processor = WorkerProcessor("pay", [declare(counted)], {})
    first = handled(processor, command())
    [called] = first
    assert isinstance(called, Output) and called.value.event == "tool_called" and not calls
    assert called.value.source == "worker:pay" and called.value.tool.idempotency_mode == "provider_key"
    assert processor.calls.pending() == 0 and not calls  # staged: nothing runs before the commit
    processor.on_commit()
    wait_for(lambda: processor.calls.pending() == 0 and processor.calls.busy(), 10, "the call to finish")
    [result] = processor.tick(0)
    assert result.value.event == "tool_succeeded" and result.value.tool.external_id == "re_1"
    assert calls == ["acme|w|run-1|refund|key-1"]


def test_a_committed_key_is_answered_from_the_ledger_without_a_call() -> None:
    calls: list[int] = []
    committed = LedgerRecord(
        idempotency_key="acme|w|run-1|refund|key-1",
        run_id="run-1",
        tenant_id="acme",
        workflow="w",
        step="refund",
        attempt=1,
        tool="refund@1",
        external_id="re_1",
        output_json='{"refund_id": "re_1", "amount_cents": 5}',
        committed_at=datetime.now(UTC),
    )
    t = declare(lambda d, c: calls.append(1), description="R.")
    [fact] = handled(WorkerProcessor("pay", [t], {"acme|w|run-1|refund|key-1": committed}), command())
    event: RunEvent = fact.value
    assert event.event == "tool_succeeded" and event.tool.already_committed and not calls


def test_a_command_for_a_tool_this_worker_does_not_serve_is_dead_lettered_with_the_reason() -> None:
    processor = WorkerProcessor("pay", [declare(refund)], {})
    with pytest.raises(Reject, match=r"no tool 'other@1' in this worker; it serves \['refund@1'\]"):
        handled(processor, command("other@1"))


def test_keel_worker_help_names_the_guarantees(capsys: pytest.CaptureFixture[str]) -> None:
    from keel.worker.cli import parser

    help_text = parser().format_help()
    assert "--processes" in help_text and "--print-definitions" in help_text
    assert "docs/workers.md" in textwrap.dedent(help_text).replace("\n", " ")


def test_a_worker_refuses_to_serve_a_tool_whose_loaded_definition_differs_from_its_code(
    tmp_path: Path,
) -> None:
    from keel.worker.cli import drift

    tools = tools_of("tests.workers.refunds")
    here = ToolRegistry.from_dirs([REPO_ROOT / "tests" / "tools"])
    assert drift(tools, here) == []
    changed = yaml.safe_load((REPO_ROOT / "tests" / "tools" / "issue_refund.v1.yaml").read_text())
    changed["idempotency"] = {"mode": "provider_key"}  # the scheduler would retry on the wrong promise
    (tmp_path / "issue_refund.v1.yaml").write_text(yaml.safe_dump(changed))
    [problem] = drift(tools, ToolRegistry.from_dirs([tmp_path]))
    assert problem.startswith("issue_refund@1: ") and "differs from the code's definition" in problem
    assert drift(tools, ToolRegistry.from_dirs([REPO_ROOT / "tools"])) == []  # not loaded: nothing to compare
