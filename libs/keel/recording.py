"""A run's recording: its events in log order, every payload they name resolved inline, and the workflow
version and tool definitions it ran with, in one self-contained JSON document (docs/replay.md).

A replay reads nothing but this document: no blob store, no API, no provider."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from keel.contracts import RunEvent
from keel.tooldefs import ToolDefinition, parse_definition
from keel.workflows import WorkflowSpec, parse_workflow

FORMAT = "keel.recording"
FORMAT_VERSION = 1  # bumped on any change a reader of an older recording must know about


class RecordingError(ValueError):
    """A recording that cannot be made or read (a payload not found, an unknown format version)."""


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def event_dict(event: RunEvent | dict[str, Any]) -> dict[str, Any]:
    """An event as JSON: timestamps as ISO text, as the API serves it."""
    return _jsonable(event.to_dict() if isinstance(event, RunEvent) else event)  # type: ignore[no-any-return]


def event_of(d: dict[str, Any]) -> RunEvent:
    """A recorded event back as the contract's RunEvent (its ISO timestamps as datetimes)."""
    d = dict(d)
    d["ts"] = datetime.fromisoformat(d["ts"])
    for detail, field in (("retry", "fire_at"), ("commit", "committed_at")):
        if d.get(detail):
            d[detail] = {**d[detail], field: datetime.fromisoformat(d[detail][field])}
    return RunEvent.from_dict(d)


def inline_by_ref(events: Iterable[dict[str, Any]]) -> dict[str, str]:
    """The payloads the events carry inline, by their ref (a model call names its request by the ref of
    the attempt's input, which its step_started carries in full)."""
    found: dict[str, str] = {}
    for e in events:
        for kind in ("input", "output"):
            ref, text = e.get(f"{kind}_ref"), e.get(f"{kind}_json")
            if ref and text is not None:
                found.setdefault(ref, text)
    return found


def refs_of(events: Iterable[dict[str, Any]]) -> list[str]:
    """Every payload ref the events name that no event carries inline, in first-named order: the
    claim-checked payloads, held only by the blob store."""
    events = list(events)
    carried = inline_by_ref(events)
    found: dict[str, None] = {}
    for e in events:
        for kind in ("input", "output"):
            ref = e.get(f"{kind}_ref")
            if ref and e.get(f"{kind}_json") is None and ref not in carried:
                found.setdefault(ref, None)
    return list(found)


def record(
    events: Iterable[RunEvent | dict[str, Any]],
    blob: Callable[[str], Any],
    workflow: WorkflowSpec | dict[str, Any] | None,
    tools: dict[str, ToolDefinition | dict[str, Any]],
) -> dict[str, Any]:
    """The recording of one run from its events in log order; `blob(ref)` gives the JSON value a ref
    names (claim-checked payloads), and must raise rather than answer None for one it cannot find."""
    dicts = [event_dict(e) for e in events]
    if not dicts:
        raise RecordingError("a recording needs at least one event")
    run_id = dicts[0]["run_id"]
    if any(e["run_id"] != run_id for e in dicts):
        raise RecordingError("a recording holds the events of one run")
    blobs = {ref: blob(ref) for ref in refs_of(dicts)}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "run_id": run_id,
        "tenant_id": dicts[0]["tenant_id"],
        "workflow": _dump(workflow),
        "tools": {name: _dump(d) for name, d in sorted(tools.items())},
        "events": dicts,
        "blobs": blobs,
    }


def _dump(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", by_alias=True, exclude_unset=True)
    return value


class Recording:
    """A recording read back: events as RunEvents, payloads by ref, definitions parsed."""

    def __init__(self, doc: dict[str, Any]) -> None:
        if doc.get("format") != FORMAT or doc.get("format_version") != FORMAT_VERSION:
            raise RecordingError(
                f"not a recording this Keel reads: format {doc.get('format')!r} "
                f"version {doc.get('format_version')!r} (expected {FORMAT!r} {FORMAT_VERSION})"
            )
        self.doc = doc
        self.run_id: str = doc["run_id"]
        self.events = [event_of(e) for e in doc["events"]]
        self.blobs: dict[str, Any] = doc.get("blobs") or {}
        self.carried = inline_by_ref(doc["events"])
        self.workflow = parse_workflow(doc["workflow"]) if doc.get("workflow") else None
        self.tools = {name: parse_definition(d) for name, d in (doc.get("tools") or {}).items()}

    @classmethod
    def load(cls, path: str) -> Recording:
        with open(path) as f:
            return cls(json.load(f))

    def payload(self, inline_json: str | None, ref: str | None) -> Any:
        """A payload an event names: inline, or from the recording's blobs; never fetched."""
        if inline_json is not None:
            return json.loads(inline_json)
        if ref is None:
            return None
        if ref in self.blobs:
            return self.blobs[ref]
        if ref in self.carried:
            return json.loads(self.carried[ref])
        raise RecordingError(f"the recording does not hold the payload {ref}")

    def input_of(self, e: RunEvent) -> Any:
        return self.payload(e.input_json, e.input_ref)

    def output_of(self, e: RunEvent) -> Any:
        return self.payload(e.output_json, e.output_ref)
