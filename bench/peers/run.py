"""Starting each peer stack beside the simulators, running its driver on the plan, stopping it again."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.peers import venvs
from keel.schemas import REPO_ROOT

REDIS_PORT = int(os.environ.get("KEEL_BENCH_REDIS_PORT", "26379"))


def say(msg: str) -> None:
    print(f"bench: {msg}", flush=True)


def _env(sims: dict[str, str]) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),  # the bench's pure modules, not Keel's library
        "BENCH_EMAIL_URL": sims["email_url"],
        "BENCH_CRM_URL": sims["crm_url"],
        "BENCH_MODEL_URL": sims["model_url"],
        "BENCH_REDIS_URL": f"redis://127.0.0.1:{REDIS_PORT}/0",
    }


def _wait_port(port: int, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)  # polling a port with a deadline
    raise TimeoutError(f"{what} did not listen on {port} within {timeout:.0f}s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def _drive(
    python: Path, module: str, plan: dict[str, Any], work: Path, env: dict[str, str]
) -> dict[str, Any]:
    plan_file, out_file = work / f"{module}.plan.json", work / f"{module}.out.json"
    plan_file.write_text(json.dumps(plan))
    out_file.unlink(missing_ok=True)
    with (work / f"{module}.log").open("ab") as log:
        # The driver's own lines go to our output (progress); library noise goes to the log.
        proc = subprocess.Popen(
            [str(python), "-m", f"bench.peers.{module}", str(plan_file), str(out_file)],
            cwd=REPO_ROOT,
            env=env,
            stdout=None,
            stderr=log,
        )
        code = proc.wait()
    if code != 0:
        raise RuntimeError(f"{module} exited with {code}; see {work / (module + '.log')}")
    return dict(json.loads(out_file.read_text()))


def redis_server() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    say("redis-server is missing: installing Debian's redis-server package")
    subprocess.run(["apt-get", "install", "-y", "-q", "redis-server"], check=True)
    return shutil.which("redis-server") or "/usr/bin/redis-server"


def run_celery(plan: dict[str, Any], work: Path) -> dict[str, Any]:
    python = venvs.ensure(work, "celery")
    env = _env(plan["sims"])
    data = work / "redis"
    data.mkdir(parents=True, exist_ok=True)
    log = (work / "celery-worker.log").open("ab")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        redis = subprocess.Popen(
            [redis_server(), "--port", str(REDIS_PORT), "--bind", "127.0.0.1", "--dir", str(data)],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        procs.append(redis)
        _wait_port(REDIS_PORT, 20, "redis-server")
        concurrency = os.environ.get("KEEL_BENCH_CELERY_CONCURRENCY", "4")
        worker = subprocess.Popen(
            [
                str(python),
                "-m",
                "celery",
                "-A",
                "bench.peers.celery_app",
                "worker",
                "-c",
                concurrency,
                "-l",
                "warning",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        procs.append(worker)
        pids = {"infra:redis": redis.pid, "celery_worker": worker.pid}
        return _drive(python, "celery_driver", {**plan, "pids": pids}, work, env)
    finally:
        for proc in reversed(procs):
            _stop(proc)
        log.close()


def run_dbos(plan: dict[str, Any], work: Path, database_url: str) -> dict[str, Any]:
    python = venvs.ensure(work, "dbos")
    plan = {**plan, "pids": {}, "database_url": database_url, "driver_is_the_system": True}
    return _drive(python, "dbos_driver", plan, work, _env(plan["sims"]))
