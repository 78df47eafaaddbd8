"""What every consume loop shares: stop on SIGTERM, a watchdog, fatal consumer errors, rebuilding."""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException

log = logging.getLogger(__name__)


class FatalLoopError(RuntimeError):
    """The loop's clients are unusable: rebuild the loop and its state (see `keep_running`)."""


def raise_if_fatal(err: KafkaError) -> None:
    """Raise FatalLoopError for a fatal consumer error; log any other one."""
    # A fatal consumer error (e.g. this static member fenced after a coordinator restart) can arrive
    # as an error event whose fatal() is false but whose code is _FATAL.
    if err.fatal() or err.code() == KafkaError._FATAL:
        raise FatalLoopError(f"consumer failed fatally: {err}")
    log.warning("consumer error: %s", err)


@contextmanager
def subscribed(
    consumer: Consumer,
    topics: list[str],
    on_assign: Callable[..., None],
    on_revoke: Callable[..., None],
    stopped: threading.Event,
    last_progress: Callable[[], float],
    stall_timeout_s: float,
) -> Iterator[None]:
    """Subscribe for the duration of a loop: SIGTERM/SIGINT set `stopped` (the batch in hand is
    finished), a watchdog guards progress, and the consumer is closed however the loop ends."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stopped.set())
        signal.signal(signal.SIGINT, lambda *_: stopped.set())
        watchdog(last_progress, stall_timeout_s, stopped)
    consumer.subscribe(topics, on_assign=on_assign, on_revoke=on_revoke, on_lost=on_revoke)
    try:
        yield
    finally:
        stopped.set()  # also ends this loop's watchdog: a rebuilt loop has its own
        try:
            consumer.close()
        except KafkaException as exc:  # a fenced consumer cannot leave cleanly; it is gone anyway
            log.warning("closing the consumer: %s", exc)


def watchdog(last_progress: Callable[[], float], stall_timeout_s: float, stopped: threading.Event) -> None:
    """Exit the process when the loop has made no progress for `stall_timeout_s`.

    librdkafka's transactional calls can block past their own timeouts when the coordinator goes away
    (e.g. a broker restart mid-commit); a process stuck there holds its partitions and never recovers.
    Dying loudly (all thread stacks on stderr) lets the supervisor restart it, fencing the stuck
    producer; its open transaction is aborted by the successor's init_transactions.
    """

    def watch() -> None:
        while not stopped.wait(min(5.0, stall_timeout_s / 4)):
            stalled = time.monotonic() - last_progress()
            if stalled > stall_timeout_s:
                log.critical("no progress for %.0f s: exiting for the supervisor to restart us", stalled)
                faulthandler.dump_traceback(all_threads=True)
                os._exit(70)

    threading.Thread(target=watch, name="watchdog", daemon=True).start()


class Runnable(Protocol):
    def run(self) -> Any: ...


L = TypeVar("L", bound=Runnable)


def keep_running(build: Callable[[], L]) -> L:
    """Run a loop built by `build` until it returns (SIGTERM); after a fatal error build a new one.

    A fresh loop each time, state included: after a fatal error its partitions may have been processed
    by another instance meanwhile, so whatever state it held is stale. Returns the last loop.
    """
    while True:
        loop = build()
        try:
            loop.run()
            return loop
        except FatalLoopError as exc:
            log.error("%s: rebuilding the loop", exc)
            time.sleep(1.0)  # let the group settle before rejoining
