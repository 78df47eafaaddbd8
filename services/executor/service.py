"""Executor shell: step commands in; model calls (outside any transaction) and facts/tool commands out.

An llm step's `step_started` commits with the command's offset in the batch's short transaction; the
model call starts only after that, on a background worker, and its answer commits in a later transaction
handed back through `tick()`. A slow model therefore never holds a transaction open or stalls the loop,
and a restarted executor never asks the model again for a command it already took: a call lost with its
process is caught by the step's deadline and retried as a new attempt.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import httpx
from confluent_kafka.admin import AdminClient
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

import keel.events as ev
from keel import provenance
from keel.background import BackgroundCalls, BackgroundProcessor
from keel.blobs import BlobMissing, BlobStore, store_for
from keel.claimcheck import resolved_command
from keel.contracts import RunEvent, StepCommand
from keel.producer import client_config
from keel.serde import Serde, register_worker_topics
from keel.settings import Settings, get_settings
from keel.tooldefs import ToolRegistry
from keel.topics import (
    RUN_EVENTS,
    STEP_COMMANDS,
    TOOL_COMMANDS,
    ensure_topics,
    worker_commands,
    worker_topics,
)
from keel.txloop import Output, Record, Reject
from services.executor import core, specs
from services.executor.calls import llm_call, turn_call
from services.executor.router import DEFAULT_MAX_TOKENS, ModelRequest, ModelRouter, RouterSettings

TOPICS = [STEP_COMMANDS]


class ExecutorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KEEL_EXECUTOR_", extra="ignore")

    # Model calls in flight at once per process; more wait their turn (and are skipped once their
    # attempt's deadline has passed).
    model_calls: int = Field(default=16, ge=1)


# name@version -> the topic its tool commands go to.
ToolRoutes = Callable[[str], str]


def http_tools_only(tool: str) -> str:
    return TOOL_COMMANDS


def routes_of(tools: ToolRegistry) -> ToolRoutes:
    """From the tools' definitions: a tool served by a worker group goes to that group's topic
    (keel.tool-commands.GROUP), read only by its workers; every other tool to keel.tool-commands, where
    the adapters serve it (an unknown one is dead-lettered there with the reason)."""

    def route(tool: str) -> str:
        group = tools.get(tool).worker if tool in tools else None
        return TOOL_COMMANDS if group is None else worker_commands(group)

    return route


class ExecutorProcessor(BackgroundProcessor):
    def __init__(
        self,
        router: ModelRouter,
        calls: BackgroundCalls,
        blobs: BlobStore | None = None,
        routes: ToolRoutes = http_tools_only,
    ) -> None:
        self.router, self.calls, self.routes = router, calls, routes
        self.blobs = blobs or store_for(get_settings())

    def handle(self, record: Record) -> Sequence[Output]:
        cmd: StepCommand = record.value
        problem = provenance.command_problem(cmd.tenant_id, cmd.idempotency_key)
        if problem:  # before its payload is read back or a model is called
            raise Reject(problem, provenance.TENANT_MISMATCH)
        try:  # an input above the blob threshold travels by reference: read it back
            cmd = resolved_command(self.blobs, cmd)
        except BlobMissing as exc:
            return [
                Output(RUN_EVENTS, cmd.run_id, e) for e in core.payload_missing(cmd, str(exc), ev.now_ms())
            ]
        started = Output(RUN_EVENTS, cmd.run_id, core.step_started(cmd, ev.now_ms()))
        if cmd.kind == "tool":
            try:
                tool_cmd = core.tool_command(cmd)
                return [started, Output(self.routes(tool_cmd.tool), cmd.run_id, tool_cmd)]
            except (KeyError, ValueError) as exc:
                raise Reject(f"malformed tool step command: {exc}", "invalid") from None
        if cmd.kind == "llm":
            self._stage_llm(record, cmd)
        elif cmd.kind == "agent":
            self._stage_turn(record, cmd)
        else:
            raise Reject(f"unknown step kind {cmd.kind!r}", "invalid")
        return [started]

    def _stage_llm(self, record: Record, cmd: StepCommand) -> None:
        try:
            spec = specs.llm_spec(cmd)
            request = _request(
                cmd,
                spec,
                messages=[{"role": "user", "content": spec.prompt}],
                response_format=spec.response_format,
            )
        except (ValueError, ValidationError) as exc:
            raise Reject(str(exc), "invalid") from None
        # Starts once this batch (step_started and the command's offset) has committed.
        self.calls.stage(
            (record.topic, record.partition),
            lambda: self._outputs(cmd, llm_call(self.router, cmd, spec, request)),
        )

    def _stage_turn(self, record: Record, cmd: StepCommand) -> None:
        """An agent's model turn: as an llm step, but its answer is the assistant's message (text or tool
        calls), committed as model_called alone; the scheduler runs the calls and the next turn."""
        try:
            spec = specs.turn_spec(cmd)
            request = _request(
                cmd,
                spec,
                messages=spec.messages,
                tools=spec.tools or None,
                response_format=spec.response_format or "text",
            )
        except (ValueError, ValidationError) as exc:
            raise Reject(str(exc), "invalid") from None
        self.calls.stage(
            (record.topic, record.partition),
            lambda: self._outputs(cmd, turn_call(self.router, cmd, spec, request)),
        )

    @staticmethod
    def _outputs(cmd: StepCommand, events: list[RunEvent]) -> list[Output]:
        return [Output(RUN_EVENTS, cmd.run_id, e) for e in events]


def make_processor(settings: Settings, serde: Serde) -> ExecutorProcessor:
    # trust_env=False: a proxy configured for the internet must not see calls to loopback providers.
    router = ModelRouter(RouterSettings(), httpx.Client(trust_env=False))
    # Loaded at start, as the scheduler does: a bad definition stops the service loudly. The worker
    # groups' topics are made here too, so a command for a tool no worker serves yet waits on its topic.
    tools = ToolRegistry.configured()
    groups = [w for w in (tools.get(t).worker for t in tools.names()) if w is not None]
    admin = AdminClient(client_config(settings))
    specs = worker_topics(settings, groups)
    ensure_topics(admin, specs, settings.topic_replication)
    register_worker_topics(serde.client, [s.name for s in specs])
    return ExecutorProcessor(
        router,
        BackgroundCalls(ExecutorSettings().model_calls, "model-call"),
        store_for(settings),
        routes_of(tools),
    )


def _request(cmd: StepCommand, spec: specs.LlmSpec | specs.TurnSpec, **call: Any) -> ModelRequest:
    """The model request of an llm step's or an agent turn's command: what differs (messages, tools, the
    answer's format) in `call`; the rest (model, tokens, effect tags, deadline, route) from the spec."""
    return ModelRequest(
        model=spec.model,
        max_tokens=spec.max_tokens or DEFAULT_MAX_TOKENS,
        metadata=specs.effect_tags(cmd),
        deadline_ms=core.deadline_ms(cmd),
        route_class=spec.route_class,
        tenant=cmd.tenant_id,
        **call,
    )
