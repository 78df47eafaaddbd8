"""Simulated OpenAI-compatible model server: deterministic chat completions with tool calls and usage.

With `tools` it plays an agent (infra/simulators/planner.py): each offered tool called once, arguments
from the conversation, then the final answer. Model faults (POST /_faults, one request each): `loop`,
`unknown_tool`, `bad_args`, `malformed_args`, `bad_answer`."""

from __future__ import annotations

import json
import time
from typing import Any

from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from infra.simulators.common import Created, Json, Simulator, make_app, new_id
from infra.simulators.dedup import effect_of
from infra.simulators.facts import text_of
from infra.simulators.faults import BASE_KINDS, MODEL_KINDS, FaultRule, error_body, fault_of
from infra.simulators.planner import Planner, Reply

MODELS = ("sim-small", "sim-medium", "sim-large")


class ChatRequest(BaseModel):
    # Unknown OpenAI parameters (temperature, max_tokens, ...) are accepted and ignored, as real servers do.
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[dict[str, Any]] = Field(min_length=1)
    tools: list[dict[str, Any]] | None = None
    response_format: dict[str, Any] | None = None
    # OpenAI's request metadata; Keel names the logical effect in it (keel_tenant, keel_run, keel_step,
    # keel_call), as it does for tool providers.
    metadata: dict[str, Any] | None = None
    stream: bool = False


def _words(text: str) -> int:
    return max(1, len(text.split()))


def _prompt_tokens(messages: list[dict[str, Any]]) -> int:
    parts = [text_of(m.get("content")) for m in messages]
    parts += [json.dumps(c.get("function", {})) for m in messages for c in m.get("tool_calls") or []]
    return _words(" ".join(parts))


def answer(req: ChatRequest, fault: FaultRule | None = None) -> Reply:
    """The reply message, its finish_reason and the text its completion tokens are counted from."""
    planner = Planner(req.model, req.messages, req.tools, req.response_format)
    if fault is None or fault.kind not in MODEL_KINDS:
        return planner.reply()
    return planner.reply(fault.kind, fault.params)


def completion(req: ChatRequest, fault: FaultRule | None = None) -> Json:
    reply = answer(req, fault)
    message, finish_reason = reply.message, reply.finish_reason
    prompt_tokens, completion_tokens = _prompt_tokens(req.messages), _words(reply.produced)
    return {
        "id": new_id("chatcmpl"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": req.model,
        "system_fingerprint": "keel-sim",
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def create_app() -> FastAPI:
    sim = Simulator(
        "model",
        write_path="/v1/chat/completions",
        token_env="KEEL_SIM_MODEL_TOKENS",
        default_token="sim-model-token",
        kinds=BASE_KINDS | MODEL_KINDS,
    )
    app = make_app(sim)

    @app.post("/v1/chat/completions")
    def chat(req: ChatRequest, request: Request, idempotency_key: str | None = Header(None)) -> JSONResponse:
        if req.stream:
            refusal = error_body("invalid_request_error", "stream is not supported")
            return JSONResponse(refusal, status_code=400)
        rule = fault_of(request)

        def create() -> Created:
            # A served completion counts as a delivery, and per logical effect (the agent turn named in
            # `metadata`): the stats then show how many times each turn was asked.
            body = completion(req, rule)
            return body["id"], {**body, "metadata": req.metadata or {}}, body

        return sim.write(idempotency_key, req, create, effect_of(req.metadata))

    @app.get("/_usage")
    def usage(tenant: str | None = None, run: str | None = None) -> Json:
        """Tokens served, by model, for the completions whose metadata names the tenant and/or run: the
        ground truth of what was spent (tokens x prices), whatever the caller's own records say."""
        by_model: dict[str, dict[str, int]] = {}
        for record in sim.all_records():
            tags = record.get("metadata") or {}
            if (tenant and tags.get("keel_tenant") != tenant) or (run and tags.get("keel_run") != run):
                continue
            row = by_model.setdefault(
                record["model"], {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0}
            )
            row["calls"] += 1
            row["prompt_tokens"] += record["usage"]["prompt_tokens"]
            row["completion_tokens"] += record["usage"]["completion_tokens"]
        return {"by_model": by_model}

    @app.get("/v1/models")
    def list_models() -> Json:
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "keel-sim"} for m in MODELS]
        return {"object": "list", "data": data}

    return app
