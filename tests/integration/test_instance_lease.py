"""One live process per instance id: a duplicate refuses to start; a killed one restarts at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from helpers import unique, wait_for
from test_txloop import ECHO, committed_offset, produce_requests, serde_for, start_echo
from test_txloop import topics as topics  # the fixture

pytestmark = pytest.mark.integration


def test_a_second_process_with_the_same_instance_id_exits_while_the_first_keeps_working(stack, topics):
    in_t, out_t, dlq, group, txid = topics
    serde = serde_for(stack, in_t, out_t, dlq)
    first = start_echo(stack, topics, "--lease")
    try:
        produce_requests(stack, serde, in_t, [unique("run") for _ in range(3)])
        wait_for(lambda: committed_offset(stack, group, in_t) == 3, what="the first process to commit")

        second = subprocess.Popen(
            [sys.executable, str(ECHO), *topics, "--lease"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        try:
            out, err = second.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            second.kill()
            out, err = second.communicate()
            pytest.fail(f"a second process with instance id {txid} kept running: {out[-500:]}")
        assert second.returncode == 78
        assert "STARTED" not in out
        assert f"instance {txid} is already running" in err and f"pid {first.pid}" in err

        # The first one was not fenced: it keeps working.
        produce_requests(stack, serde, in_t, [unique("run") for _ in range(2)])
        wait_for(lambda: committed_offset(stack, group, in_t) == 5, what="the first process to go on")
        assert first.poll() is None
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(20)
    assert first.returncode == 0


def test_a_killed_instance_restarts_under_its_own_id_within_seconds(stack, topics):
    in_t, out_t, dlq, group, _ = topics
    serde = serde_for(stack, in_t, out_t, dlq)
    worker = start_echo(stack, topics, "--lease")
    produce_requests(stack, serde, in_t, [unique("run")])
    wait_for(lambda: committed_offset(stack, group, in_t) == 1, what="the worker to commit")

    worker.send_signal(signal.SIGKILL)
    worker.wait(10)
    killed_at = time.monotonic()
    produce_requests(stack, serde, in_t, [unique("run")])
    restarted = start_echo(stack, topics, "--lease")
    try:
        wait_for(lambda: committed_offset(stack, group, in_t) == 2, timeout=30, what="the restarted worker")
        back_after = time.monotonic() - killed_at
    finally:
        restarted.send_signal(signal.SIGTERM)
        restarted.wait(20)
    assert back_after < 8.0, f"back only {back_after:.1f}s after the kill"


def test_a_holder_paused_past_its_lease_is_replaced_and_exits_when_it_wakes(stack, topics):
    in_t, out_t, dlq, group, _ = topics
    serde = serde_for(stack, in_t, out_t, dlq)
    paused = start_echo(stack, topics, "--lease")
    try:
        produce_requests(stack, serde, in_t, [unique("run")])
        wait_for(lambda: committed_offset(stack, group, in_t) == 1, what="the first process to commit")
        paused.send_signal(signal.SIGSTOP)  # alive, but renewing nothing: like a long GC pause
        successor = start_echo(stack, topics, "--lease")  # watches one interval, then takes over
        try:
            paused.send_signal(signal.SIGCONT)
            assert paused.wait(30) == 75  # it sees the newer claim and leaves
            produce_requests(stack, serde, in_t, [unique("run")])
            wait_for(lambda: committed_offset(stack, group, in_t) == 2, what="the successor to commit")
            assert successor.poll() is None
        finally:
            successor.send_signal(signal.SIGTERM)
            successor.wait(20)
    finally:
        if paused.poll() is None:
            paused.kill()
            paused.wait(10)
