"""The console's dead letters (operators): the waiting ones (and the redriven, on demand), one letter's
origin, reason and history with its value decoded where its topic's contract reads it (raw otherwise),
and redrives of one or many, through the JSON routes' own functions."""

from __future__ import annotations

import functools
import json
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from keel.serde import Serde, registry_client
from services.api import operators
from services.api.console.session import posted, render, who
from services.api.deps import CONSOLE_PREFIX, deps_of

router = APIRouter(prefix=CONSOLE_PREFIX, include_in_schema=False)
PICKED = "redrive:"  # a checkbox per dead letter: redrive:<dead letter id>


@functools.lru_cache(maxsize=4)
def _serde(registry_url: str) -> Serde:
    return Serde(registry_client(registry_url))


def decoded(request: Request, topic: str, value: bytes | None) -> str | None:
    """The value as its topic's contract reads it, as JSON text; None when it cannot be read so (not
    Avro, a topic with no contract, a truncated copy): the page shows the raw bytes then."""
    if not value:
        return None
    try:
        record = _serde(deps_of(request).settings.schema_registry_url).decode(topic, value)
        return json.dumps(record.to_dict(), indent=2, sort_keys=True, default=str, ensure_ascii=False)
    except Exception:  # whatever made it a dead letter may make it undecodable: that is the point
        return None


@router.get("/dead-letters", response_class=HTMLResponse)
def letters(request: Request, all: bool = False) -> HTMLResponse:  # noqa: A002
    found = who(request, "operator")
    listed = operators.list_dead_letters(request, found.id, all)["dead_letters"]
    notice = request.query_params.get("notice")
    return render(request, "letters.html", who=found, letters=listed, all=all, notice=notice)


@router.get("/dead-letters/{dead_letter_id}", response_class=HTMLResponse)
def letter(request: Request, dead_letter_id: str) -> HTMLResponse:
    found = who(request, "operator")
    entry = operators.dead_letter(request, dead_letter_id)  # one read of the index
    raw = entry.letter.value or b""
    return render(
        request, "letter.html", who=found, letter=entry.detail(),
        decoded=None if entry.letter.value_truncated else decoded(request, entry.letter.source_topic, raw),
        raw_hex=raw[:2048].hex(" "), notice=request.query_params.get("notice"),
    )  # fmt: skip


def _back(notice: str, to: str = "") -> Response:
    return RedirectResponse(
        f"{CONSOLE_PREFIX}/dead-letters{to}?{urlencode({'notice': notice})}", status_code=303
    )


@router.post("/dead-letters/{dead_letter_id}/redrive")
async def redrive_one(request: Request, dead_letter_id: str) -> Response:
    found, form = await posted(request, "operator")
    force = form.get("force") == "1"
    done = await run_in_threadpool(operators.redrive_one, request, dead_letter_id, found.id, force)
    return _back(f"{dead_letter_id} redriven to {done.get('to')}", f"/{dead_letter_id}")


@router.post("/dead-letters/redrive")
async def redrive_many(request: Request) -> Response:
    """The picked dead letters, or (`all`) every waiting one the API may write back."""
    found, form = await posted(request, "operator")
    if form.get("all") == "1":
        done = await run_in_threadpool(operators.redrive_all, request, found.id)
        counted = f"{len(done['redriven'])} redriven, {len(done['refused'])} refused"
        refused = "; ".join(f"{r['dead_letter_id']}: {r['reason']}" for r in done["refused"])
        return _back(counted + (f" ({refused})" if refused else ""))
    picked = [k.removeprefix(PICKED) for k in form if k.startswith(PICKED)]
    said: list[str] = []
    for dead_letter_id in picked:
        done = await run_in_threadpool(operators.redrive_one, request, dead_letter_id, found.id, False)
        said.append(f"{dead_letter_id} → {done.get('to')}")
    return _back("redriven: " + ", ".join(said) if said else "nothing picked")
