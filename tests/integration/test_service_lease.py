"""`python -m services.NAME --instance N` holds the instance's lease: a duplicate refuses to start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import make_topics, unique

pytestmark = pytest.mark.integration
SVC = Path(__file__).with_name("svc.py")


def _start(name: str, topic: str, out: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(SVC), name, topic, out, "--instance", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )


def test_a_service_started_twice_under_one_instance_id_refuses_the_second(stack):
    name, topic, out = unique("svc"), unique("test.in"), unique("test.out")
    make_topics(stack, topic, out)
    first = _start(name, topic, out)
    try:
        assert first.stderr is not None
        for line in first.stderr:  # up and holding the lease once it is assigned its partition
            if "assigned 1 partitions" in line:
                break
        second = _start(name, topic, out)
        try:
            _, err = second.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            second.kill()
            second.communicate()
            pytest.fail("a second process with the same instance id kept running")
        assert second.returncode == 78
        assert f"instance keel-{name}-0 is already running: pid {first.pid}" in err
        assert first.poll() is None
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(20)
    assert first.returncode == 0
