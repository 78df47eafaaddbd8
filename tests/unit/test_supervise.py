"""keel_ops.supervise: restarts what crashes, never what refused to start because its instance id is taken."""

import sys
import time

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
