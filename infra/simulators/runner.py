"""Runs a simulator in-process on a background thread, for tests and local tooling."""

from __future__ import annotations

import importlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import uvicorn
from fastapi import FastAPI

SIMULATORS = ("email", "crm", "model", "payments", "helpdesk", "receiver")


def create_app(name: str) -> FastAPI:
    """A fresh app (with fresh state) for the named simulator."""
    if name not in SIMULATORS:
        raise ValueError(f"unknown simulator {name!r}; choose one of {SIMULATORS}")
    module = importlib.import_module(f"infra.simulators.{name}")
    app: FastAPI = module.create_app()
    return app


class SimServer(uvicorn.Server):
    """A uvicorn server that calls `on_ready` once it is accepting connections."""

    def __init__(self, config: uvicorn.Config, on_ready: Callable[[], None] | None = None) -> None:
        super().__init__(config)
        self._on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self._on_ready is not None:
            self._on_ready()


def make_server(name: str, on_ready: Callable[[], None] | None = None) -> SimServer:
    # A short graceful-shutdown window: an accept_then_timeout request may still be hanging at shutdown.
    config = uvicorn.Config(
        create_app(name), log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=1
    )
    return SimServer(config, on_ready)


def bind(host: str, port: int) -> socket.socket:
    """Bind the listening socket ourselves, so port 0 yields a known free port before the server starts."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _wait_until_up(url: str, thread: threading.Thread, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    # trust_env=False: a proxy configured in the environment must never see loopback traffic.
    with httpx.Client(timeout=0.5, trust_env=False) as client:
        while time.monotonic() < deadline:
            if not thread.is_alive():
                raise RuntimeError(f"simulator at {url} exited during startup")
            try:
                if client.get(f"{url}/_stats").status_code == 200:
                    return
            except httpx.TransportError:
                pass  # not listening yet
            thread.join(0.02)  # wait a moment, but wake at once if the server thread dies
    raise TimeoutError(f"simulator at {url} did not answer within {timeout}s")


@contextmanager
def running(name: str, port: int = 0, host: str = "127.0.0.1", timeout: float = 10.0) -> Iterator[str]:
    """Run simulator `name` on a background thread; yields its base URL and stops it on exit."""
    sock = bind(host, port)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{sock.getsockname()[1]}"
    server = make_server(name)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"keel-sim-{name}", daemon=True
    )
    thread.start()
    try:
        _wait_until_up(url, thread, timeout)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()
