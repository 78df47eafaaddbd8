"""The scheduler's own configuration: which topics it reads and writes, and how long it keeps ended runs."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from keel.settings import Settings
from keel.topics import CONTROL, DEFINITIONS, RUN_EVENTS, RUN_REQUESTS, SCHEDULER_STATE, STEP_COMMANDS


@dataclass(frozen=True)
class SchedulerTopics:
    """The scheduler's topics; tests give it their own, unique ones."""

    requests: str = RUN_REQUESTS
    events: str = RUN_EVENTS
    control: str = CONTROL
    commands: str = STEP_COMMANDS
    state: str = SCHEDULER_STATE
    definitions: str = DEFINITIONS  # read in the background, not consumed by the loop

    def inputs(self) -> list[str]:
        return [self.requests, self.events, self.control]


class SchedulerSettings(Settings):
    model_config = SettingsConfigDict(env_prefix="KEEL_", extra="ignore")

    # retention_horizon_s (shared): an ended run is kept as a small marker for this long, so a repeated
    # run_id stays a no-op; then it leaves memory and the changelog. A run request older than this is
    # refused (dead-lettered): once the marker is gone nothing could tell it apart from a new run.

    def tool_call_bound_ms(self) -> int:
        """The longest a lost tool attempt may still be mid-call after its deadline (connect, write and
        read phases each get the shared tool timeout): its retry waits this long."""
        return int(3 * self.tool_timeout_s * 1000) + 1000

    # Tombstones written per transaction at most, so expiring a backlog of markers never makes a huge one.
    retention_batch: int = Field(default=2000, ge=1)
