"""The scheduler's own configuration: which topics it reads and writes, and how long it keeps ended runs."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from keel.topics import CONTROL, RUN_EVENTS, RUN_REQUESTS, SCHEDULER_STATE, STEP_COMMANDS

WEEK_S = 7 * 24 * 3600.0


@dataclass(frozen=True)
class SchedulerTopics:
    """The scheduler's topics; tests give it their own, unique ones."""

    requests: str = RUN_REQUESTS
    events: str = RUN_EVENTS
    control: str = CONTROL
    commands: str = STEP_COMMANDS
    state: str = SCHEDULER_STATE

    def inputs(self) -> list[str]:
        return [self.requests, self.events, self.control]


class SchedulerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KEEL_", extra="ignore")

    # An ended run is kept as a small marker for this long, so a repeated run_id stays a no-op; then it
    # leaves memory and the changelog. A run request older than this is refused (dead-lettered): once
    # the marker is gone nothing could tell it apart from a new run.
    retention_horizon_s: float = Field(default=WEEK_S, gt=0)
    # The adapters' HTTP timeout (the same KEEL_TOOL_TIMEOUT_S). A tool attempt lost without a report may
    # still be mid-call on a dead instance, which nothing can fence: its retry waits until the attempt's
    # deadline plus the longest such a call can take (connect, write and read phases each get the timeout).
    tool_timeout_s: float = Field(default=5.0, gt=0)

    def tool_call_bound_ms(self) -> int:
        return int(3 * self.tool_timeout_s * 1000) + 1000

    # Tombstones written per transaction at most, so expiring a backlog of markers never makes a huge one.
    retention_batch: int = Field(default=2000, ge=1)
