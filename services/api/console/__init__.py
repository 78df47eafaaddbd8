"""The operator console (docs/console.md): HTML pages under /console, served by the API from the same
queries and the same checks as its JSON routes, for the person paged at 3 a.m."""

from __future__ import annotations

from fastapi import FastAPI

from services.api.console import casepages, costpages, letterpages, runpages, session


def install(app: FastAPI) -> None:
    session.install(app)
    for module in (session, runpages, casepages, letterpages, costpages):
        app.include_router(module.router)
