"""Operator endpoints: dead letters across tenants (list, inspect, redrive), for the operator role and
above (docs/tenancy.md, section 1)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from keel import dlq
from keel.serde import Serde, registry_client
from services.api import docs
from services.api.deadletters import DeadLetterIndex, IndexUnavailable
from services.api.deps import at_least
from services.api.errors import ApiError

AUTH = docs.errors(400, 401, 403, 503)
router = APIRouter(prefix="/v1/dead-letters", responses=AUTH)
# FROZEN FORMAT of dead-letter ids: topic:partition:offset.
_DEAD_LETTER_ID = re.compile(r"^[A-Za-z0-9._-]{1,249}:[0-9]{1,10}:[0-9]{1,19}$")


def operator(request: Request) -> str:
    """The operator's principal id (for the audit); 401 for a missing or unknown credential, 403 for a
    role below operator."""
    return at_least(request, "operator").id


Operator = Annotated[str, Depends(operator)]


def entries(request: Request) -> list[dlq.Entry]:
    try:
        return request.app.state.dead_letters.entries()  # type: ignore[no-any-return]
    except IndexUnavailable as exc:
        raise ApiError(503, "broker_unavailable", str(exc)) from None


def dead_letter(request: Request, dead_letter_id: str) -> dlq.Entry:
    """One dead letter with its redrive status (for the JSON routes and the console's page), or a 404."""
    found = None
    if _DEAD_LETTER_ID.match(dead_letter_id):
        found = dlq.find(entries(request), dead_letter_id)
    if found is None:
        raise ApiError(404, "not_found", f"no dead letter {dead_letter_id!r}")
    return found


@router.get("", response_model=None, responses=docs.ok(docs.DeadLetters))
def list_dead_letters(request: Request, _: Operator, all: bool = False) -> dict[str, Any]:  # noqa: A002
    """Waiting dead letters (all=true: redriven ones too), oldest first."""
    found = entries(request)
    return {"dead_letters": [e.summary() for e in (found if all else dlq.waiting(found))]}


@router.get("/{dead_letter_id}", response_model=None, responses=docs.errors(404))
def show_dead_letter(request: Request, dead_letter_id: str, _: Operator) -> dict[str, Any]:
    return dead_letter(request, dead_letter_id).detail()


@router.post("/{dead_letter_id}/redrive", response_model=None, responses=docs.errors(403, 404, 409))
def redrive_one(request: Request, dead_letter_id: str, who: Operator, force: bool = False) -> dict[str, Any]:
    entry = dead_letter(request, dead_letter_id)
    if entry.status is not None and not force:
        raise ApiError(
            409,
            "already_redriven",
            f"{dead_letter_id} was redriven already ({entry.status['to']}); pass force=true to send it again",
        )
    try:
        status = dlq.redrive(request.app.state.deps.settings, entry.letter, who, replaces=entry.status)
    except dlq.RedriveRefused as exc:
        raise ApiError(403, "redrive_not_permitted", str(exc)) from None
    request.app.state.dead_letters.redriven(dead_letter_id, status)
    return {"dead_letter_id": dead_letter_id, **status}


@router.post("/redrive", response_model=None, responses=docs.ok(docs.Redriven))
def redrive_all(request: Request, who: Operator) -> dict[str, Any]:
    """Redrive every waiting dead letter the API may write back; the others are listed as refused (the
    broker lets the API write run requests and control commands only: docs/tenancy.md)."""
    settings = request.app.state.deps.settings
    serde = Serde(registry_client(settings.schema_registry_url))  # one registry client for all of them
    done: list[dict[str, Any]] = []
    refused: list[dict[str, Any]] = []
    for e in dlq.waiting(entries(request)):
        try:
            status = dlq.redrive(settings, e.letter, who, serde=serde)
        except dlq.RedriveRefused as exc:
            refused.append({"dead_letter_id": e.letter.dead_letter_id, "reason": str(exc)})
            continue
        request.app.state.dead_letters.redriven(e.letter.dead_letter_id, status)
        done.append({"dead_letter_id": e.letter.dead_letter_id, **status})
    return {"redriven": done, "refused": refused}


def install(app: Any) -> None:
    app.state.dead_letters = DeadLetterIndex(app.state.deps.settings)
    app.include_router(router)


def close(app: Any) -> None:
    app.state.dead_letters.close()
