"""A small pool of autocommit Postgres connections for the API's request threads."""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import DictRow, dict_row


class Pool:
    def __init__(self, url: Callable[[], str], size: int, connect_timeout: float = 5.0) -> None:
        self._url, self._size, self._timeout = url, size, connect_timeout
        self._idle: queue.LifoQueue[psycopg.Connection[DictRow]] = queue.LifoQueue()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[DictRow]]:
        try:
            conn = self._idle.get_nowait()
        except queue.Empty:
            conn = psycopg.connect(
                self._url(), autocommit=True, connect_timeout=int(self._timeout), row_factory=dict_row
            )
        try:
            yield conn
        finally:
            # A broken connection is dropped here, so the next request gets a fresh one.
            if conn.closed or conn.broken or self._idle.qsize() >= self._size:
                conn.close()
            else:
                self._idle.put(conn)

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()
