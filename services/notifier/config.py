"""The notifier's configuration: tenants' webhooks, the public URL of links, the delivery policy."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from keel.settings import Settings
from services.notifier.core import Policy


class ConfigError(ValueError):
    """The webhook configuration cannot be used: the notifier refuses to start, saying why."""


@dataclass(frozen=True)
class Endpoint:
    """Where one tenant's notifications go, and the secret they are signed with."""

    url: str
    secret: str


class NotifierSettings(Settings):
    model_config = SettingsConfigDict(env_prefix="KEEL_", extra="ignore")

    # {"tenant": {"url": "...", "secret": "..."}}, inline or in a file (not both).
    webhooks: str | None = None
    webhooks_file: Path | None = None
    # The base of the links in a notification: where operators reach the API (default: KEEL_API_URL).
    public_url: str | None = None
    webhook_max_attempts: int = Field(default=8, ge=1)
    # A notification still undelivered this long after its first attempt is given up (dead-lettered).
    webhook_max_age_s: float = Field(default=3600.0, gt=0)
    # The first retry waits about this long; each next one twice as long, up to the max.
    webhook_backoff_s: float = Field(default=1.0, gt=0)
    webhook_backoff_max_s: float = Field(default=300.0, gt=0)
    webhook_timeout_s: float = Field(default=5.0, gt=0)
    # The consumer group: one per deployment (tests give theirs a unique one).
    notifier_group: str = "keel-notifier"
    # Where a new consumer group (no committed offsets yet) starts: "latest" does not replay the whole
    # history of keel.run-events to the tenants the day the notifier is first deployed.
    notifier_start: Literal["latest", "earliest"] = "latest"
    # Notifications read but not yet delivered or given up, at most; past it reading pauses.
    notifier_max_pending: int = Field(default=10_000, ge=1)
    # Offsets are committed this often (up to the oldest notification not settled yet).
    notifier_commit_interval_s: float = Field(default=0.5, gt=0)

    def policy(self) -> Policy:
        return Policy(
            max_attempts=self.webhook_max_attempts,
            max_age_s=self.webhook_max_age_s,
            backoff_s=self.webhook_backoff_s,
            backoff_max_s=self.webhook_backoff_max_s,
            timeout_s=self.webhook_timeout_s,
        )

    def endpoints(self) -> dict[str, Endpoint]:
        """The tenants' webhooks; a malformed configuration raises ConfigError naming what is wrong."""
        if self.webhooks and self.webhooks_file:
            raise ConfigError("set KEEL_WEBHOOKS or KEEL_WEBHOOKS_FILE, not both")
        if self.webhooks_file:
            try:
                text = self.webhooks_file.read_text()
            except OSError as exc:
                raise ConfigError(f"KEEL_WEBHOOKS_FILE {self.webhooks_file}: cannot read it: {exc}") from exc
            return parse_endpoints(text, f"KEEL_WEBHOOKS_FILE {self.webhooks_file}")
        return parse_endpoints(self.webhooks or "{}", "KEEL_WEBHOOKS")

    def checked_public_url(self) -> str:
        url = self.public_url or self.api_url
        if not _is_http_url(url):
            name = "KEEL_PUBLIC_URL" if self.public_url else "KEEL_API_URL (the default of KEEL_PUBLIC_URL)"
            raise ConfigError(f"{name} must be an http(s) URL, not {url!r}")
        return url.rstrip("/")


def _is_http_url(url: str) -> bool:
    parsed = urlparse(url)
    return parsed.scheme in ("http", "https") and bool(parsed.netloc)


def parse_endpoints(text: str, where: str) -> dict[str, Endpoint]:
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{where}: not JSON: {exc}") from exc
    if not isinstance(raw, dict):
        shape = '{"tenant": {"url": ..., "secret": ...}}'
        raise ConfigError(f"{where}: expected {shape}, got {type(raw).__name__}")
    out: dict[str, Endpoint] = {}
    for tenant, entry in raw.items():
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: tenant {tenant!r}: expected an object with url and secret")
        unknown = set(entry) - {"url", "secret"}
        if unknown:
            raise ConfigError(f"{where}: tenant {tenant!r}: unknown fields {sorted(unknown)}")
        url, secret = entry.get("url"), entry.get("secret")
        if not isinstance(url, str) or not _is_http_url(url):
            raise ConfigError(f"{where}: tenant {tenant!r}: url must be an http(s) URL, not {url!r}")
        if not isinstance(secret, str) or not secret:
            raise ConfigError(f"{where}: tenant {tenant!r}: secret must be a non-empty string")
        out[tenant] = Endpoint(url=url, secret=secret)
    return out
