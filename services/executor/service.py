"""Executor shell: step commands in; model calls (outside any transaction) and facts/tool commands out."""

from __future__ import annotations

import json
from collections.abc import Sequence

import httpx

import keel.events as ev
from keel.contracts import StepCommand
from keel.router import ModelError, ModelRequest, ModelRouter, RouterSettings
from keel.serde import Serde
from keel.settings import Settings
from keel.topics import RUN_EVENTS, STEP_COMMANDS, TOOL_COMMANDS
from keel.txloop import Output, Processor, Record, Reject
from services.executor import core

TOPICS = [STEP_COMMANDS]


class ExecutorProcessor(Processor):
    concurrency = 8  # model and provider calls wait on the network
    max_batch = 64  # bounds how long one batch can wait on slow providers

    def __init__(self, router: ModelRouter) -> None:
        self.router = router

    def handle(self, record: Record) -> Sequence[Output]:
        cmd: StepCommand = record.value
        now = ev.now_ms()
        outputs = [Output(RUN_EVENTS, cmd.run_id, core.step_started(cmd, now))]
        if cmd.kind == "tool":
            try:
                outputs.append(Output(TOOL_COMMANDS, cmd.run_id, core.tool_command(cmd)))
            except (KeyError, ValueError) as exc:
                raise Reject(f"malformed tool step command: {exc}", "invalid") from None
            return outputs
        if cmd.kind != "llm":
            raise Reject(f"unknown step kind {cmd.kind!r}", "invalid")
        spec = json.loads(cmd.input_json)
        agent, model = spec.get("agent"), spec["model"]
        request = ModelRequest(
            model=model,
            messages=[{"role": "user", "content": spec["prompt"]}],
            response_format=spec.get("response_format") or "text",
        )
        try:
            answer = self.router.complete(request)
        except ModelError as exc:
            events = core.llm_failed(
                cmd, agent, model, exc.failure_class, exc.message, getattr(exc, "cost_usd", None), ev.now_ms()
            )
            events += core.circuit_events(cmd, exc.transitions, ev.now_ms())
        else:
            output = answer.parsed if request.response_format == "json" else {"text": answer.content}
            events = core.llm_succeeded(
                cmd,
                agent,
                answer.model,
                answer.provider,
                answer.prompt_tokens,
                answer.completion_tokens,
                answer.cost_usd,
                answer.latency_ms,
                output,
                ev.now_ms(),
            )
            events += core.circuit_events(cmd, answer.transitions, ev.now_ms())
        return outputs + [Output(RUN_EVENTS, cmd.run_id, e) for e in events]


def make_processor(settings: Settings, _: Serde) -> ExecutorProcessor:
    # trust_env=False: a proxy configured for the internet must not see calls to loopback providers.
    return ExecutorProcessor(ModelRouter(RouterSettings(), httpx.Client(trust_env=False)))
