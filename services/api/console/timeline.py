"""A run's facts shaped for reading (pure): each row's one-line detail, and for each retry the failure
it answers, so the page can link a retry to its reason."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Row:
    anchor: str  # the row's id in the page
    event: dict[str, Any]  # the timeline entry, as GET /v1/runs/{id}/events gives it
    detail: str  # what the fact says beyond its columns
    because: str | None  # a retry's: the anchor of the failure it answers
    refs: tuple[tuple[str, str], ...]  # (input|output, sha256 ref) of payloads it names


def _detail(kind: str, body: dict[str, Any]) -> str:
    retry, tool, model = body.get("retry") or {}, body.get("tool") or {}, body.get("model_call") or {}
    case, budget = body.get("quarantine") or {}, body.get("budget") or {}
    parts: list[str] = []
    if retry:
        parts.append(
            f"attempt {retry.get('next_attempt')} in {retry.get('delay_ms')} ms "
            f"({retry.get('failure_class')}: {retry.get('reason')})"
        )
    if tool:
        said = [f"tool {tool.get('tool')}", f"mode {tool.get('idempotency_mode')}"]
        said += [f"HTTP {tool['http_status']}"] if tool.get("http_status") else []
        said += [f"{tool['latency_ms']} ms"] if tool.get("latency_ms") is not None else []
        said += ["already committed"] if tool.get("already_committed") else []
        parts.append(", ".join(said))
    if model:
        parts.append(
            f"model {body.get('model')} via {model.get('provider')}: {model.get('prompt_tokens')} in, "
            f"{model.get('completion_tokens')} out"
        )
    if case:
        said = [f"case {case.get('case_id')}", str(case.get("reason") or "")]
        if case.get("decision"):
            said.append(f"decided {case['decision']} by {case.get('decided_by')}")
        parts.append(", ".join(s for s in said if s))
    if budget:
        parts.append(", ".join(f"{k} {v}" for k, v in sorted(budget.items()) if v is not None))
    return "; ".join(parts)


def rows(events: list[dict[str, Any]]) -> list[Row]:
    """The timeline in log order; a retry_scheduled row points at the last failure of its step (and
    sub-step) before it."""
    failed: dict[tuple[str | None, str | None], str] = {}
    out = []
    for n, e in enumerate(events):
        anchor, body = f"ev-{n}", e.get("body") or {}
        where = (e.get("step"), e.get("call"))
        because = failed.get(where) if e["kind"] == "retry_scheduled" else None
        if e["kind"] != "retry_scheduled" and (e.get("failure_class") or e["kind"].endswith("_failed")):
            failed[where] = anchor
        refs = tuple((side, body[f"{side}_ref"]) for side in ("input", "output") if body.get(f"{side}_ref"))
        out.append(Row(anchor, e, _detail(e["kind"], body), because, refs))
    return out
