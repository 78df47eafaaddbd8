"""The API's own settings (KEEL_API_*), beside the process-wide keel settings."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from keel.topics import CONTROL, DEFINITIONS, RUN_REQUESTS


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KEEL_API_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    # The schema holding the projections (tests point this at their own).
    projection_schema: str = "keel"
    run_requests_topic: str = RUN_REQUESTS
    # Where cancel, pause, resume and decisions go (ControlCommand, keyed by run id; tests: their own).
    control_topic: str = CONTROL
    # How long a decision waits to see its outcome in the projections before answering 202 pending.
    decision_wait_s: float = Field(default=10.0, ge=0)
    # Where workflow definitions are registered and read from (tests point this at their own).
    definitions_topic: str = DEFINITIONS
    # Run inputs up to 32 MiB (keel.intake.MAX_INPUT_BYTES) and the body's own fields: inputs above the
    # blob threshold travel by reference (the request carries input_ref), so events stay small.
    max_body_bytes: int = Field(default=33 * 1024 * 1024, ge=1024)
    # How long a POST waits for the broker to acknowledge the run request.
    delivery_timeout_s: float = Field(default=10.0, gt=0)
    health_timeout_s: float = Field(default=2.0, gt=0)
    db_pool_size: int = Field(default=8, ge=1)
    # The day budgets the enforcer applies (KEEL_BUDGET_LIMITS, keel.budget_limits): the console shows
    # each one's use today.
    budget_limits: str | None = Field(default=None, validation_alias="KEEL_BUDGET_LIMITS")
