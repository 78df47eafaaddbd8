"""What every route needs: the wired dependencies, and who calls (docs/tenancy.md, section 1): each
route names the least role it needs, and a tenant route the caller's tenant.

`Viewer`, `Submitter`: the caller's tenant (a principal without one, an operator's or admin's, gets 403:
these routes act for one tenant by its own run names). `Reader`, `OperatorPrincipal`, `Admin`: the
principal (any tenant or none). 401 for a missing, unknown, expired or revoked credential; 403 for a role
too small."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Protocol

from fastapi import Depends, Request

from keel.definitions.tools import ToolView
from keel.settings import Settings
from keel.workflows import WorkflowSpec
from services.api.apikeys import Principal
from services.api.auth import Authenticator, Unauthenticated
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
    auth: Authenticator
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


def principal(request: Request) -> Principal:
    """The principal of the request's bearer credential; 401 without a valid one."""
    try:
        return deps_of(request).auth.authenticate(bearer_key(request, "api"))
    except Unauthenticated as exc:
        raise ApiError(401, "unauthenticated", str(exc), {"WWW-Authenticate": "Bearer"}) from None


def at_least(request: Request, role: str) -> Principal:
    """The caller, when its role is `role` or above; 403 otherwise."""
    found = principal(request)
    if not found.may(role):
        raise ApiError(403, "forbidden", f"this needs the role {role} or above; {found.id} is a {found.role}")
    return found


class ActingTenant(str):
    """A tenant id (a str, as every query takes it) that also names the principal acting for it, so a
    run request records who submitted it (`requested_by`) without every helper passing both."""

    principal_id: str


def tenant_of(found: Principal) -> str:
    if found.tenant is None:
        raise ApiError(
            403, "forbidden", f"this route acts for one tenant: {found.id} ({found.role}) names none"
        )
    acting = ActingTenant(found.tenant)
    acting.principal_id = found.id
    return acting


def viewer(request: Request) -> str:
    return tenant_of(at_least(request, "viewer"))


def submitter(request: Request) -> str:
    return tenant_of(at_least(request, "submitter"))


def reader(request: Request) -> Principal:
    return at_least(request, "viewer")


def operator_principal(request: Request) -> Principal:
    return at_least(request, "operator")


def admin(request: Request) -> str:
    return at_least(request, "admin").id


Viewer = Annotated[str, Depends(viewer)]  # reads of the caller's tenant
Submitter = Annotated[str, Depends(submitter)]  # writes of the caller's tenant
Reader = Annotated[Principal, Depends(reader)]  # reads that need no tenant (or scope by it)
OperatorPrincipal = Annotated[Principal, Depends(operator_principal)]
Admin = Annotated[str, Depends(admin)]  # the principal id, as the audit names it
