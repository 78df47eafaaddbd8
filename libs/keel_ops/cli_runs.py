"""Operator commands of the `keel` CLI that work through the HTTP API: submit, runs, timeline."""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from typing import Any

import httpx

from keel import events as ev
from keel.settings import Settings
from keel.vocab import SETTLED_RUN_STATUSES
from keel_ops import agent_trace, case_trace

TERMINAL = SETTLED_RUN_STATUSES  # where waiting for a run ends


class ApiError(RuntimeError):
    pass


def console_line(settings: Settings, run_id: str) -> str:
    """Where the run opens in the operator console (docs/console.md), and with which key to log in."""
    key = settings.api_key if settings.api_key.endswith("-dev-key") else "your API key"
    return f"open it in the console: {settings.api_url}/console/runs/{run_id} (log in with {key})"


def api(settings: Settings, method: str, path: str, **kwargs: Any) -> Any:
    headers = {"Authorization": f"Bearer {settings.api_key}", **kwargs.pop("headers", {})}
    try:
        reply = httpx.request(
            method, f"{settings.api_url}{path}", headers=headers, timeout=30, trust_env=False, **kwargs
        )
    except httpx.TransportError as exc:
        raise ApiError(
            f"the API at {settings.api_url} does not answer ({exc}); is the stack up (`keel up`)?"
        ) from None
    body = reply.json() if reply.content else None
    if reply.status_code >= 400:
        message = body.get("error", {}).get("message") if isinstance(body, dict) else reply.text
        raise ApiError(f"{method} {path}: HTTP {reply.status_code}: {message}")
    return body


def submit(
    settings: Settings,
    workflow: str,
    run_input: dict[str, Any],
    run_id: str | None = None,
    idempotency_key: str | None = None,
    budget_usd: float | None = None,
) -> str:
    body: dict[str, Any] = {"workflow": workflow, "input": run_input}
    if run_id:
        body["run_id"] = run_id
    if budget_usd is not None:
        body["budget_usd"] = budget_usd
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    return str(api(settings, "POST", "/v1/runs", json=body, headers=headers)["run_id"])


def wait(settings: Settings, run_id: str, timeout_s: float = 120.0, quiet: bool = False) -> dict[str, Any]:
    """Poll the run until it is terminal (or held in quarantine); prints progress unless quiet."""
    deadline, last = time.monotonic() + timeout_s, None
    while True:
        try:
            run = api(settings, "GET", f"/v1/runs/{run_id}")
        except ApiError as exc:
            if "404" not in str(exc):  # not projected yet
                raise
            run = {"status": "accepted"}
        if run["status"] != last and not quiet:
            print(f"  run {run_id}: {run['status']}", flush=True)
            last = run["status"]
        if run["status"] in TERMINAL:
            return dict(run)
        if time.monotonic() > deadline:
            raise TimeoutError(f"run {run_id} is still {run['status']} after {timeout_s:.0f}s")
        time.sleep(0.3)


def _common(e: dict[str, Any], cost: bool = True) -> list[str]:
    """What any fact may say: its failure, error, retry, the external id, an answer from the ledger."""
    body = e.get("body") or {}
    parts = []
    if e.get("failure_class"):
        parts.append(f"failure={e['failure_class']}")
    if e.get("error"):
        parts.append(str(e["error"])[:80])
    retry = body.get("retry") or {}
    if retry:
        parts.append(
            f"retry #{retry.get('next_attempt')} in {retry.get('delay_ms')} ms: {retry.get('reason')}"
        )
    if e.get("external_id"):
        parts.append(f"id={e['external_id']}")
    tool = body.get("tool") or {}
    if tool.get("already_committed"):
        parts.append("already committed: provider not called")
    if cost and e.get("cost_usd"):
        parts.append(f"${e['cost_usd']:.6f}")
    return parts


def _agent_parts(e: dict[str, Any], asks: dict[str, str]) -> list[str]:
    """An agent sub-step's line: its own parts (tokens, choice, tool, refusal), the common ones, then
    what came back."""
    if e["event"] == ev.TOOL_CALL_REFUSED:
        return agent_trace.detail(e, asks)  # its error is the reason, shown in full there
    common = _common(e, cost=e["event"] != ev.MODEL_CALLED)
    return [p for p in (*agent_trace.detail(e, asks), *common, agent_trace.result(e)) if p]


def format_timeline(events: list[dict[str, Any]]) -> str:
    """One line per fact, in log order. An agent step's facts also name their sub-step (`turn-2`,
    `turn-2.call-0`), each turn opens with a heading, and each agent step ends with its totals."""
    if not events:
        return "(no events)"
    t0 = datetime.fromisoformat(str(events[0]["ts"]))
    width = max((len(e.get("call") or "") for e in events), default=0)
    agents: dict[str, agent_trace.AgentStep] = {}
    keys: dict[str, str] = {}
    asks: dict[str, str] = {}
    headed: set[tuple[str, int]] = set()
    lines = []
    for e in events:
        dt = (datetime.fromisoformat(str(e["ts"])) - t0).total_seconds()
        key = e.get("idempotency_key")
        tag = ""
        if key:
            tag = keys.setdefault(key, f"key#{len(keys) + 1}")
        step = e.get("step") or "(run)"
        attempt = f"#{e['attempt']}" if e.get("attempt") else ""
        call, turn = e.get("call"), agent_trace.turn_of(e.get("call"))
        if call:
            agents.setdefault(step, agent_trace.AgentStep()).add(e)
            parts = _agent_parts(e, asks)
        elif step in agents and e["event"] == ev.STEP_COMMITTED:
            parts = [*_common(e), agent_trace.answer(e)]
        else:
            parts = [*case_trace.parts(e), *_common(e)]
        if turn is not None and (step, turn) not in headed:
            headed.add((step, turn))
            lines.append(f"  -- {step}: turn {turn} --")
        sub = f" {call or '':<{width}}" if width else ""
        lines.append(
            f"  +{dt:7.3f}s  {step:<18}{sub} {attempt:<3} {e['event']:<17} {tag:<6} "
            f"{'  '.join(p for p in parts if p)}".rstrip()
        )
    lines.extend(agent.summary(step) for step, agent in agents.items())
    for key, tag in keys.items():
        lines.append(f"  {tag} = {key}")
    for ref, tag in asks.items():
        lines.append(f"  {tag} = {ref}")
    return "\n".join(lines)


def timeline(settings: Settings, run_id: str) -> str:
    return format_timeline(api(settings, "GET", f"/v1/runs/{run_id}/events")["events"])


def print_runs(settings: Settings, status: str | None, workflow: str | None, limit: int) -> None:
    params = {k: v for k, v in {"status": status, "workflow": workflow, "limit": limit}.items() if v}
    runs = api(settings, "GET", "/v1/runs", params=params)["runs"]
    if not runs:
        print("no runs")
        return
    for r in runs:
        print(
            f"{r['run_id']:<40} {r['workflow']:<18} {r['status']:<12} ${r.get('cost_usd') or 0:.6f}  "
            f"{r.get('created_at', '')}"
        )


def load_input(text: str | None, path: str | None) -> dict[str, Any]:
    raw = sys.stdin.read() if path == "-" else (open(path).read() if path else (text or "{}"))
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"the run input is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError("the run input must be a JSON object")
    return value
