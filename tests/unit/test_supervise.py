"""keel_ops.supervise: restarts what crashes, never what refused to start because its instance id is taken;
and stopping it (keel down) leaves nothing of it running."""

import os
import signal
import sys
import time

from keel.settings import Settings
from keel_ops.stack import Background, running_pid, start_background, stop_background
from keel_ops.supervise import main


def test_a_command_refusing_with_78_is_not_restarted(tmp_path):
    runs = tmp_path / "runs"
    script = f"open({str(runs)!r}, 'a').write('x'); raise SystemExit(78)"
    assert main(["--", sys.executable, "-c", script]) == 78
    assert runs.read_text() == "x"


def test_a_crashing_command_is_restarted(tmp_path):
    runs = tmp_path / "runs"
    script = (
        f"import os; p = {str(runs)!r}; open(p, 'a').write('x');"
        "raise SystemExit(0 if len(open(p).read()) > 1 else 3)"
    )
    started = time.monotonic()
    assert main(["--", sys.executable, "-c", script]) == 0
    assert runs.read_text() == "xx" and time.monotonic() - started < 10


def test_stopping_a_supervised_service_that_will_not_stop_leaves_nothing_running(tmp_path):
    # keel down sends SIGTERM to the supervisor, which passes it on; a service still busy past the
    # timeout is killed, and with it everything of its session: its supervisor, and the service itself
    # (left running, it would keep its instance lease and refuse the next keel up its start).
    settings = Settings(data_dir=tmp_path)
    child_pid = tmp_path / "child.pid"
    stubborn = (
        "import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        f"open({str(child_pid)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    )
    argv = [sys.executable, "-m", "keel_ops.supervise", "--", sys.executable, "-c", stubborn]
    started = Background("stubborn", argv, ready=lambda: child_pid.exists() and child_pid.read_text() != "")
    start_background(settings, started)
    pid = int(child_pid.read_text())
    assert stop_background(settings, "stubborn", timeout=1.0)
    assert running_pid(settings, "stubborn") is None

    deadline = time.monotonic() + 5
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        assert not alive(pid), "the service outlived its supervisor"
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    """Whether the process exists and is not a zombie waiting to be reaped."""
    try:
        os.kill(pid, 0)
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False
