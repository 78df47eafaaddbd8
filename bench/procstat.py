"""CPU time and peak memory of processes, read from /proc (Linux)."""

from __future__ import annotations

import os
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds_of_stat(stat: str, ticks: int = CLOCK_TICKS) -> float:
    """utime + stime of a /proc/<pid>/stat line (fields 14 and 15; the name in parentheses may hold
    spaces, so fields are counted after its closing parenthesis)."""
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / ticks


def peak_rss_mib_of_status(status: str) -> float | None:
    """VmHWM (the peak resident set the kernel recorded) of a /proc/<pid>/status text, in MiB."""
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return None


def cpu_seconds(pid: int) -> float | None:
    try:
        return cpu_seconds_of_stat(Path(f"/proc/{pid}/stat").read_text())
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return None


def peak_rss_mib(pid: int) -> float | None:
    try:
        return peak_rss_mib_of_status(Path(f"/proc/{pid}/status").read_text())
    except (FileNotFoundError, ProcessLookupError):
        return None


def children(pid: int) -> list[int]:
    """Direct and indirect children of `pid` (a supervisor's service, a worker pool's processes)."""
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            kids = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        out.extend(int(k) for k in kids)
        todo.extend(int(k) for k in kids)
    return out


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and its living children."""
    return sum(c for p in [pid, *children(pid)] if (c := cpu_seconds(p)) is not None)


def tree_peak_rss_mib(pid: int) -> float:
    """Peak RSS of a process plus that of its children (each one's own peak: an upper bound)."""
    return sum(r for p in [pid, *children(pid)] if (r := peak_rss_mib(p)) is not None)
