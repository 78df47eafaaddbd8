"""What every route needs: the wired dependencies, and the calling tenant from its bearer key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Protocol

from fastapi import Depends, Request

from keel.definitions.tools import ToolView
from keel.settings import Settings
from keel.workflows import WorkflowSpec
from services.api.apikeys import ApiKeys
from services.api.config import ApiSettings
from services.api.errors import ApiError
from services.api.pool import Pool
from services.api.submit import Publisher


class Workflows(Protocol):
    """What the API reads workflows through: keel.workflows.Catalog or keel.definitions.view."""

    def get(self, name: str, version: int | None = None) -> WorkflowSpec: ...
    def versions(self, name: str) -> list[int]: ...
    def names(self) -> list[str]: ...


@dataclass
class Deps:
    settings: Settings
    api: ApiSettings
    keys: ApiKeys
    catalog: Workflows
    pool: Pool
    publisher: Publisher
    tools: ToolView  # the tool files plus the registered tools


def deps_of(request: Request) -> Deps:
    return request.app.state.deps  # type: ignore[no-any-return]


def bearer_key(request: Request, who: str) -> str:
    """The presented bearer key; 401 without one."""
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise ApiError(
            401,
            "unauthenticated",
            f"missing API key: send 'Authorization: Bearer <{who} key>'",
            {"WWW-Authenticate": "Bearer"},
        )
    return key.strip()


def tenant(request: Request) -> str:
    """The tenant of the request's bearer key; 401 without a valid one."""
    found = deps_of(request).keys.tenant_for(bearer_key(request, "api"))
    if found is None:
        raise ApiError(401, "unauthenticated", "invalid API key", {"WWW-Authenticate": "Bearer"})
    return found


Tenant = Annotated[str, Depends(tenant)]
