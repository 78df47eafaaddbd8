"""The console's session and page shell: login with an API key or token (checked by the API's own
Authenticator, then kept in an HttpOnly cookie the API's auth dependency reads on /console paths), CSRF
tokens derived from that credential, HTML error pages, and the security headers of every page."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote

import jinja2
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from services.api import errors
from services.api.apikeys import Principal
from services.api.auth import Unauthenticated
from services.api.deps import CONSOLE_PREFIX, SESSION_COOKIE, at_least, bearer_key, deps_of
from services.api.errors import ApiError
from services.api.runs import read_body

router = APIRouter(prefix=CONSOLE_PREFIX, include_in_schema=False)
HERE = Path(__file__).parent
LOGIN_COOKIE = "keel_console_login"  # the login form's double-submit token (no session exists yet)
# No inline script or style anywhere: a payload that slips into a page still cannot run.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,  # every template, whatever its name: payloads are untrusted
    undefined=jinja2.StrictUndefined,
)


class LoginRequired(Exception):
    """No valid credential on a console page: the browser is sent to the login page, then back."""

    def __init__(self, back: str) -> None:
        super().__init__(back)
        self.back = back


def who(request: Request, role: str = "viewer") -> Principal:
    """The caller through the API's own auth dependency (header, or the session cookie here); the login
    page for a missing or refused credential, 403 for a role below `role`."""
    try:
        return at_least(request, role)
    except ApiError as exc:
        if exc.status == 401:
            back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise LoginRequired(back) from None
        raise


def csrf_token(credential: str) -> str:
    """Bound to the session's credential: a page of another site can neither read nor derive it."""
    return hmac.new(credential.encode(), b"keel-console-csrf", hashlib.sha256).hexdigest()


def form_of(raw: bytes) -> dict[str, str]:
    """An urlencoded form body as field -> value (the last one of a repeated field)."""
    try:
        fields = parse_qs(raw.decode(), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_form", "the form is not UTF-8") from None
    return {k: v[-1] for k, v in fields.items()}


Body = TypeVar("Body", bound=BaseModel)


def form_body(model: type[Body], fields: Mapping[str, Any]) -> Body:
    """A form's fields read as the JSON route's body model (so checked alike): 400 with the reasons."""
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        raise ApiError(400, "invalid_request", errors.describe(list(exc.errors()))) from None  # type: ignore[arg-type]


async def posted(request: Request, role: str) -> tuple[Principal, dict[str, str]]:
    """The caller (at least `role`) and the form it posted, once its CSRF token matches its session."""
    found = who(request, role)
    form = form_of(await read_body(request, deps_of(request).api.max_body_bytes))
    expected = csrf_token(bearer_key(request, "api"))
    if not hmac.compare_digest(form.get("csrf", "").encode(), expected.encode()):
        raise ApiError(403, "csrf", "the form's CSRF token is missing or not this session's: reload the page")
    return found, form


def render(request: Request, template: str, code: int = 200, **context: Any) -> HTMLResponse:
    """A page; `who` (the caller, or None) and `csrf` are given to every template."""
    try:
        credential = bearer_key(request, "api")
    except ApiError:
        credential = ""
    html = _ENV.get_template(template).render(csrf=csrf_token(credential) if credential else "", **context)
    return HTMLResponse(html, status_code=code)


def safe_next(target: str | None) -> str:
    """A page of the console to go back to; anything else (another site, say) is the runs list."""
    if target and target.startswith(CONSOLE_PREFIX + "/") and "//" not in target and "\\" not in target:
        return target
    return f"{CONSOLE_PREFIX}/runs"


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str | None = None) -> HTMLResponse:  # noqa: A002
    token = secrets.token_urlsafe(24)
    page = render(request, "login.html", who=None, login_token=token, next=safe_next(next), error=None)
    _set_cookie(request, page, LOGIN_COOKIE, token)
    return page


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    form = form_of(await read_body(request, deps_of(request).api.max_body_bytes))
    token, back = form.get("login_token", ""), safe_next(form.get("next"))
    if not token or not hmac.compare_digest(token.encode(), request.cookies.get(LOGIN_COOKIE, "").encode()):
        raise ApiError(403, "csrf", "the login form expired: reload the login page")
    key = form.get("key", "").strip()
    try:  # exactly as the JSON API checks a bearer credential
        await run_in_threadpool(deps_of(request).auth.authenticate, key)
    except Unauthenticated as exc:
        return render(request, "login.html", 401, who=None, login_token=token, next=back, error=str(exc))
    done = RedirectResponse(back, status_code=303)
    _set_cookie(request, done, SESSION_COOKIE, key)
    done.delete_cookie(LOGIN_COOKIE, path=CONSOLE_PREFIX, httponly=True, samesite="strict")
    return done


@router.post("/logout")
async def logout(request: Request) -> Response:
    await posted(request, "viewer")
    done = RedirectResponse(f"{CONSOLE_PREFIX}/login", status_code=303)
    done.delete_cookie(SESSION_COOKIE, path=CONSOLE_PREFIX, httponly=True, samesite="strict")
    return done


@router.get("")
@router.get("/")
def home() -> Response:
    return RedirectResponse(f"{CONSOLE_PREFIX}/runs", status_code=303)


def _set_cookie(request: Request, response: Response, name: str, value: str) -> None:
    response.set_cookie(
        name,
        value,
        path=CONSOLE_PREFIX,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    return render(request, "error.html", status, who=None, status=status, message=message)


def install(app: FastAPI) -> None:
    """Static files, HTML errors on console paths (the JSON shape elsewhere), the login redirect, and the
    security headers."""
    app.mount(f"{CONSOLE_PREFIX}/static", StaticFiles(directory=HERE / "static"), name="console-static")
    handlers: dict[Any, Callable[[Request, Any], Awaitable[Response]]] = dict(app.exception_handlers)

    def html_on_console(kind: type[Exception], status_of: Callable[[Any], tuple[int, str]]) -> None:
        json_handler = handlers[kind]

        async def handle(request: Request, exc: Any) -> Response:
            if not request.url.path.startswith(CONSOLE_PREFIX + "/"):
                return await json_handler(request, exc)
            return error_page(request, *status_of(exc))

        app.add_exception_handler(kind, handle)

    html_on_console(ApiError, lambda exc: (exc.status, exc.message))
    html_on_console(
        RequestValidationError,
        lambda exc: (400, errors.describe(list(exc.errors()))),  # a bad filter, say
    )

    async def login_required(_: Request, exc: Exception) -> Response:
        back = exc.back if isinstance(exc, LoginRequired) else ""
        return RedirectResponse(f"{CONSOLE_PREFIX}/login?next={quote(back, safe='')}", status_code=303)

    app.add_exception_handler(LoginRequired, login_required)

    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        if request.url.path.startswith(CONSOLE_PREFIX):
            response.headers["Content-Security-Policy"] = CSP
            response.headers["X-Content-Type-Options"] = "nosniff"
            response.headers["Referrer-Policy"] = "no-referrer"
            response.headers["Cache-Control"] = "no-store"
        return response
