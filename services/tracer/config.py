"""The tracer's configuration: KEEL_ environment variables (the exporter reads the OTEL_ ones)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from keel.settings import Settings

GROUP = "keel-tracer"


class TracerSettings(Settings):
    model_config = SettingsConfigDict(env_prefix="KEEL_", extra="ignore")

    tracer_group: str = GROUP
    # Where a new group (no committed offsets yet) starts: "latest" does not export the whole retained
    # history of keel.run-events the day the tracer is first deployed.
    tracer_start: Literal["latest", "earliest"] = "latest"
    # A run with no new event for this long is exported as it stands (a run held for a human).
    tracer_idle_s: float = Field(default=300.0, gt=0)
    # A run holding this many events is exported as it stands (memory stays bounded).
    tracer_max_run_events: int = Field(default=5000, ge=1)
    # After the collector refused a batch, the next try waits this long.
    tracer_retry_s: float = Field(default=5.0, gt=0)
    tracer_commit_interval_s: float = Field(default=1.0, gt=0)
