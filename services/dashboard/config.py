"""The dashboard's configuration: KEEL_ environment variables through one settings object."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from keel.settings import Settings
from keel.topics import RUN_EVENTS

GROUP = "keel.dashboard"


class DashboardSettings(Settings):
    model_config = SettingsConfigDict(env_prefix="KEEL_", extra="ignore")

    dashboard_port: int = Field(default=8090, ge=0, le=65535)
    dashboard_host: str = "127.0.0.1"
    dashboard_topic: str = RUN_EVENTS
    dashboard_group: str = GROUP
    # The name the figures are kept under; the consumer group's when unset.
    dashboard_scope: str | None = None
