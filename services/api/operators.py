"""Operator endpoints: dead letters across tenants (list, inspect, redrive), behind operator keys."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from keel import dlq
from keel.apikeys import is_operator, operator_hashes
from services.api.errors import ApiError

router = APIRouter(prefix="/v1/dead-letters")


def operator(request: Request) -> str:
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise ApiError(
            401,
            "unauthenticated",
            "missing API key: send 'Authorization: Bearer <operator key>'",
            {"WWW-Authenticate": "Bearer"},
        )
    if not is_operator(key.strip(), request.app.state.operator_hashes):
        raise ApiError(403, "forbidden", "dead letters are for operators: this key is not an operator's")
    return "operator"


Operator = Annotated[str, Depends(operator)]


def _entry(request: Request, dead_letter_id: str) -> dlq.Entry:
    found = dlq.find(dlq.entries(request.app.state.deps.settings), dead_letter_id)
    if found is None:
        raise ApiError(404, "not_found", f"no dead letter {dead_letter_id!r}")
    return found


@router.get("")
def list_dead_letters(request: Request, _: Operator, all: bool = False) -> dict[str, Any]:  # noqa: A002
    """Waiting dead letters (all=true: redriven ones too), oldest first."""
    entries = dlq.entries(request.app.state.deps.settings)
    return {"dead_letters": [e.summary() for e in (entries if all else dlq.waiting(entries))]}


@router.get("/{dead_letter_id}")
def show_dead_letter(request: Request, dead_letter_id: str, _: Operator) -> dict[str, Any]:
    return _entry(request, dead_letter_id).detail()


@router.post("/{dead_letter_id}/redrive")
def redrive_one(request: Request, dead_letter_id: str, who: Operator, force: bool = False) -> dict[str, Any]:
    entry = _entry(request, dead_letter_id)
    if entry.status is not None and not force:
        raise ApiError(
            409,
            "already_redriven",
            f"{dead_letter_id} was redriven already ({entry.status['to']}); pass force=true to send it again",
        )
    return {
        "dead_letter_id": dead_letter_id,
        **dlq.redrive(request.app.state.deps.settings, entry.letter, who),
    }


@router.post("/redrive")
def redrive_all(request: Request, who: Operator) -> dict[str, Any]:
    """Redrive every waiting dead letter."""
    settings = request.app.state.deps.settings
    done = [
        {"dead_letter_id": e.letter.dead_letter_id, **dlq.redrive(settings, e.letter, who)}
        for e in dlq.waiting(dlq.entries(settings))
    ]
    return {"redriven": done}


def install(app: Any) -> None:
    app.state.operator_hashes = operator_hashes()
    app.include_router(router)
