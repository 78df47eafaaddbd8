"""What every route needs: the wired dependencies, and who calls (docs/tenancy.md, section 1): each
route names the least role it needs, and a tenant route the caller's tenant.

`Viewer`: the caller's tenant, `TenantSubmitter`: the caller (a principal without a tenant, an operator's
or admin's, gets 403: these routes act for one tenant by its own run names). `Reader`, `Writer`,
`OperatorPrincipal`: the principal of that role or above (any tenant or none). `Admin`: its id. 401 for
a missing, unknown, expired or revoked credential; 403 for a role too small."""

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

CONSOLE_PREFIX = "/console"  # the operator console's pages (services/api/console)
SESSION_COOKIE = "keel_console"  # the console's session: the credential pasted at its login, HttpOnly


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
    """The presented bearer key; on the console's pages, without one, its session cookie (docs/console.md);
    401 without either. Only there: a browser sends a cookie with every request to this host, so the JSON
    routes never read it (no cross-site request can act through them), and the console's forms carry a
    CSRF token."""
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if not key.strip() and request.url.path.startswith(CONSOLE_PREFIX + "/"):
        scheme, key = "bearer", request.cookies.get(SESSION_COOKIE, "")
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


def of_a_tenant(found: Principal) -> Principal:
    """The caller, when it acts for a tenant; 403 for an operator or admin, who names none."""
    if found.tenant is None:
        raise ApiError(
            403, "forbidden", f"this route acts for one tenant: {found.id} ({found.role}) names none"
        )
    return found


def viewer(request: Request) -> str:
    return str(of_a_tenant(at_least(request, "viewer")).tenant)


def tenant_submitter(request: Request) -> Principal:
    return of_a_tenant(at_least(request, "submitter"))


def reader(request: Request) -> Principal:
    return at_least(request, "viewer")


def writer(request: Request) -> Principal:
    return at_least(request, "submitter")


def operator_principal(request: Request) -> Principal:
    return at_least(request, "operator")


def admin(request: Request) -> str:
    return at_least(request, "admin").id


Viewer = Annotated[str, Depends(viewer)]  # reads of the caller's tenant
TenantSubmitter = Annotated[Principal, Depends(tenant_submitter)]  # writes of the caller's tenant
Reader = Annotated[Principal, Depends(reader)]  # reads that need no tenant (or scope by it)
Writer = Annotated[Principal, Depends(writer)]  # control: a tenant's submitter (its own) or an operator
OperatorPrincipal = Annotated[Principal, Depends(operator_principal)]
Admin = Annotated[str, Depends(admin)]  # the principal id, as the audit names it
