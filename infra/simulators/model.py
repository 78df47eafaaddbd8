"""Simulated OpenAI-compatible model server: deterministic chat completions with tool calls and usage."""

from __future__ import annotations

import hashlib
import json
import re
import time
from typing import Any

from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from infra.simulators.common import Created, Json, Simulator, make_app, new_id
from infra.simulators.faults import BASE_KINDS, error_body, fault_of

MODELS = ("sim-small", "sim-medium", "sim-large")
_WORDS = (
    "thanks",
    "for",
    "your",
    "note",
    "we",
    "can",
    "help",
    "the",
    "team",
    "with",
    "a",
    "quick",
    "plan",
    "next",
    "week",
    "to",
    "review",
    "pricing",
    "and",
    "share",
    "results",
    "from",
    "our",
    "pilot",
    "happy",
    "call",
    "on",
    "tuesday",
    "about",
    "goals",
    "budget",
    "timeline",
)
_CALL_TOOL = re.compile(r"call tool ([A-Za-z0-9_.\-]+)")


class ChatRequest(BaseModel):
    # Unknown OpenAI parameters (temperature, max_tokens, ...) are accepted and ignored, as real servers do.
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[dict[str, Any]] = Field(min_length=1)
    tools: list[dict[str, Any]] | None = None
    response_format: dict[str, Any] | None = None
    stream: bool = False


def _text(content: Any) -> str:
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def _words(text: str) -> int:
    return max(1, len(text.split()))


def _prompt_tokens(messages: list[dict[str, Any]]) -> int:
    parts = [_text(m.get("content")) for m in messages]
    parts += [json.dumps(c.get("function", {})) for m in messages for c in m.get("tool_calls") or []]
    return _words(" ".join(parts))


def _draft(model: str, prompt: str) -> tuple[str, str]:
    """A subject and body that depend only on the model and the prompt, so replays compare equal."""
    digest = hashlib.sha256(f"{model}\n{prompt}".encode()).digest()
    words = [_WORDS[b % len(_WORDS)] for b in digest[1 : 13 + digest[0] % 12]]
    subject = " ".join(words[:4]).capitalize()
    return subject, " ".join(words).capitalize() + "."


def _tool_call(name: str, messages: list[dict[str, Any]]) -> Json:
    # The id is derived from the conversation so it is stable across replays yet differs per turn.
    call_id = "call_" + hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()[:24]
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": "{}"}}


def answer(req: ChatRequest, looping: bool) -> tuple[Json, str, str]:
    """The reply message, its finish_reason and the text its completion tokens are counted from."""
    last = req.messages[-1]
    prompt = next((_text(m.get("content")) for m in reversed(req.messages) if m.get("role") == "user"), "")
    tool_names = [t.get("function", {}).get("name") for t in req.tools or []]
    wanted = _CALL_TOOL.search(prompt) if last.get("role") == "user" else None
    name: str | None = None
    if looping:  # a looping model keeps calling the same tool whatever the conversation says
        name = tool_names[0] if tool_names and tool_names[0] else "search"
    elif wanted and wanted.group(1) in tool_names:  # a real model only calls tools it was offered
        name = wanted.group(1)
    if name is not None:
        call = _tool_call(name, req.messages)
        return {"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls", f"{name} {{}}"
    subject, body = _draft(req.model, prompt)
    if (req.response_format or {}).get("type") == "json_object":
        content = json.dumps({"subject": subject, "body": body})
    else:
        content = f"Subject: {subject}\n\n{body}"
    return {"role": "assistant", "content": content}, "stop", content


def completion(req: ChatRequest, looping: bool) -> Json:
    message, finish_reason, produced = answer(req, looping)
    prompt_tokens, completion_tokens = _prompt_tokens(req.messages), _words(produced)
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
        kinds=BASE_KINDS | {"loop"},
    )
    app = make_app(sim)

    @app.post("/v1/chat/completions")
    def chat(req: ChatRequest, request: Request, idempotency_key: str | None = Header(None)) -> JSONResponse:
        if req.stream:
            refusal = error_body("invalid_request_error", "stream is not supported")
            return JSONResponse(refusal, status_code=400)
        rule = fault_of(request)
        looping = rule is not None and rule.kind == "loop"

        def create() -> Created:
            # A served completion counts as a delivery: the stats then show how many model calls were made.
            body = completion(req, looping)
            return body["id"], body, body

        return sim.write(idempotency_key, req, create)

    @app.get("/v1/models")
    def list_models() -> Json:
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "keel-sim"} for m in MODELS]
        return {"object": "list", "data": data}

    return app
