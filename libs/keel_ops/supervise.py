"""Keeps one service process running: `python -m keel_ops.supervise -- COMMAND...` (used by `keel up`).

Restarts the command when it exits abnormally (a crash, the loop watchdog, kill -9), with a growing
pause; passes SIGTERM/SIGINT on and exits when the command stops because it was asked to. A command that
exits with 78 (EX_CONFIG: another live process holds its instance id, see keel.lease) is not restarted:
no restart can fix that, and retrying would only compete with the holder.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

NOT_RESTARTABLE = 78  # EX_CONFIG


def main(argv: list[str]) -> int:
    if "--" not in argv or argv.index("--") == len(argv) - 1:
        print("usage: python -m keel_ops.supervise -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    command = argv[argv.index("--") + 1 :]
    stopping = False
    child: subprocess.Popen[bytes] | None = None

    def forward(signum: int, _: object) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    pause = 1.0
    while True:
        started = time.monotonic()
        child = subprocess.Popen(command)
        code = child.wait()
        if stopping or code == 0:
            return code
        if code == NOT_RESTARTABLE:
            print(
                f"keel_ops.supervise: {' '.join(command)} refused to start (78); not restarting it",
                file=sys.stderr,
            )
            return code
        # A process that ran a while before failing gets restarted at once; one that keeps failing
        # at start waits longer each time (at most 30 s), so it cannot spin.
        pause = 1.0 if time.monotonic() - started > 60 else min(pause * 2, 30.0)
        print(
            f"keel_ops.supervise: {' '.join(command)} exited with {code}; restarting in {pause:.0f}s",
            file=sys.stderr,
            flush=True,
        )
        time.sleep(pause)
        if stopping:
            return code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
