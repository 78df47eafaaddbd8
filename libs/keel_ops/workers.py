"""What waits for tool workers: per worker group's command topic, the commands its consumer group has not
taken yet and whether any worker is a member (`keel status`). A command for a tool no worker serves sits
on its group's topic, counted here, until a worker of that group starts."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from keel.producer import client_config
from keel.settings import Settings
from keel.tooldefs import ToolRegistry
from keel.topics import WORKER_COMMANDS_PREFIX, worker_group_id

MAX_COUNTED = 10_000  # beyond this many waiting commands per partition, the count says "at least"


@dataclass(frozen=True)
class Backlog:
    group: str
    topic: str
    waiting: int  # commands after the worker group's committed offsets (transaction markers excluded)
    members: int  # live members of the worker group's consumer group
    tools: tuple[str, ...]  # the tools the loaded definitions send to this group

    def line(self) -> str:
        served = "no worker" if self.members == 0 else f"{self.members} worker(s)"
        what = ", ".join(self.tools) or f"worker group {self.group}"
        noun = "command" if self.waiting == 1 else "commands"
        return f"{what}: {self.waiting} {noun} waiting, {served} ({self.topic})"


def _members(admin: AdminClient, group_id: str) -> int:
    try:
        described = admin.describe_consumer_groups([group_id])[group_id].result(10)
    except Exception:  # no such group yet: no worker ever joined
        return 0
    return len(described.members)


def _waiting(settings: Settings, topic: str, group_id: str, timeout_s: float = 10.0) -> int:
    """Messages a read_committed reader finds after the group's committed offsets: the end offsets alone
    would also count transaction markers and aborted records."""
    reader = Consumer(
        {
            **client_config(settings),
            "group.id": f"keel-status-{uuid.uuid4().hex[:8]}",  # never commits: reads only
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    probe = Consumer({**client_config(settings), "group.id": group_id})
    try:
        parts = reader.list_topics(topic, timeout=10).topics[topic].partitions
        tps = [TopicPartition(topic, p) for p in parts]
        committed = probe.committed(tps, timeout=10)
        count, ends = 0, {}
        starts = []
        for tp in committed:
            low, high = reader.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=10)
            start = tp.offset if tp.offset >= 0 else low  # a group with no commit reads from the start
            if start < high:
                starts.append(TopicPartition(topic, tp.partition, start))
                ends[tp.partition] = high
        if not starts:
            return 0
        reader.assign(starts)
        deadline = time.monotonic() + timeout_s
        while ends and time.monotonic() < deadline:
            msg = reader.poll(0.2)
            if msg is not None and not msg.error():
                count += 1
                if count >= MAX_COUNTED:
                    break
            for tp in reader.position([TopicPartition(topic, p) for p in list(ends)]):
                if tp.offset >= ends[tp.partition]:
                    del ends[tp.partition]
        return count
    finally:
        reader.close()
        probe.close()


def backlogs(settings: Settings, tools: ToolRegistry | None = None) -> list[Backlog]:
    """One Backlog per worker group topic on the broker (and per group the definitions name)."""
    admin = AdminClient(client_config(settings))
    topics = [t for t in admin.list_topics(timeout=10).topics if t.startswith(WORKER_COMMANDS_PREFIX)]
    by_group: dict[str, list[str]] = {t.removeprefix(WORKER_COMMANDS_PREFIX): [] for t in topics}
    if tools is not None:
        for name in tools.names():
            group = tools.get(name).worker
            if group is not None and group in by_group:
                by_group[group].append(name)
    found = []
    for group, names in sorted(by_group.items()):
        topic, gid = WORKER_COMMANDS_PREFIX + group, worker_group_id(group)
        waiting, members = _waiting(settings, topic, gid), _members(admin, gid)
        found.append(Backlog(group, topic, waiting, members, tuple(names)))
    return found
