"""Driver of the Celery + Redis peer: `python -m bench.peers.celery_driver PLAN.json OUT.json`."""

from __future__ import annotations

import json
from typing import Any

from celery import chain

from bench.peers import celery_app as c
from bench.peers.driver import Peer, main


def make_peer(plan: dict[str, Any]) -> Peer:
    store = c.store()
    for key in store.scan_iter("bench:*"):
        store.delete(key)

    def submit(phase: str, run_id: str, lead: dict[str, str]) -> None:
        chain(
            c.draft_email.s(phase, run_id, lead),
            c.log_to_crm.s(phase, run_id, lead),
            c.send_email.s(phase, run_id, lead),
        ).apply_async()

    def ended(phase: str) -> int:
        return int(store.get(f"bench:ended:{phase}") or 0)

    def marks(phase: str) -> list[list[Any]]:
        return [json.loads(m) for m in store.lrange(f"bench:marks:{phase}", 0, -1)]

    return Peer(submit, ended, marks)


if __name__ == "__main__":
    main(make_peer, "celery")
