"""Each peer in its own virtual environment under var/bench, installed from the package registry."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

# Pinned so every run of the bench compares against the same peers.
PACKAGES = {
    # kombu 5.7 imports `packaging` for its Redis transport without declaring it.
    "celery": ["celery==5.7.0", "redis==8.1.0", "packaging", "httpx>=0.27,<1"],
    "dbos": ["dbos==3.4.0", "httpx>=0.27,<1"],
}


def ensure(root: Path, name: str) -> Path:
    """The peer's python, creating and installing its environment the first time (or when the pins
    changed). Uses the interpreter the bench runs on, so the peers run on the same Python."""
    env = root / f"venv-{name}"
    python = env / "bin" / "python"
    wanted = hashlib.sha256(" ".join(PACKAGES[name]).encode()).hexdigest()[:16]
    stamp = env / f".installed-{wanted}"
    if stamp.exists():
        return python
    print(f"bench: installing {' '.join(PACKAGES[name])} into {env} ...", flush=True)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *PACKAGES[name]], check=True)
    for old in env.glob(".installed-*"):
        old.unlink()
    stamp.touch()
    return python
