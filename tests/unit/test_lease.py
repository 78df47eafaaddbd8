"""When an instance lease can be taken at once, without waiting for a renewal (pure checks)."""

import os
import socket
import subprocess
import sys
import time

from keel.lease import LeaseRecord, _started, free_at_once

NOW = 1_800_000_000_000


def _held(pid: int, host: str | None = None, at_ms: int = NOW, state: str = "held") -> LeaseRecord:
    return LeaseRecord("t", host or socket.gethostname(), pid, _started(pid), at_ms, state)


def test_a_lease_of_a_process_that_is_gone_is_free_at_once():
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead = _held(int(done.stdout))
    assert free_at_once(LeaseRecord(**{**dead.__dict__, "started": "1"}), NOW, 1.0)


def test_a_recent_lease_of_a_live_process_must_be_watched():
    assert not free_at_once(_held(os.getpid()), NOW, 1.0)
    assert not free_at_once(_held(os.getpid(), host="another-host"), NOW, 1.0)


def test_a_reused_pid_does_not_keep_a_lease():
    reused = LeaseRecord("t", socket.gethostname(), os.getpid(), "not-its-start-time", NOW, "held")
    assert free_at_once(reused, NOW, 1.0)


def test_released_stale_or_absent_leases_are_free():
    assert free_at_once(None, NOW, 1.0)
    assert free_at_once(_held(os.getpid(), state="released"), NOW, 1.0)
    assert free_at_once(_held(os.getpid(), host="another-host", at_ms=NOW - 60_000), NOW, 1.0)


def test_a_killed_process_not_yet_reaped_holds_no_lease():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        record = _held(child.pid)
        assert not free_at_once(record, NOW, 1.0)
        child.kill()
        deadline = time.monotonic() + 10
        while not free_at_once(record, NOW, 1.0):  # a zombie until we reap it below
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        child.wait(10)
