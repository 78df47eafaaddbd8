"""Process configuration: one settings object per process, from KEEL_* environment variables."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from keel.schemas import REPO_ROOT


class Settings(BaseSettings):
    """Defaults work on localhost with no configuration at all."""

    model_config = SettingsConfigDict(env_prefix="KEEL_", extra="ignore")

    kafka_bootstrap: str = "127.0.0.1:9092"
    # How this process authenticates to the broker (docs/tenancy.md section 2): PLAINTEXT (no
    # authentication: a broker without ACLs, or the local broker's loopback admin door) or SASL with
    # this process's own principal. Every Kafka client Keel makes reads these (keel.producer.client_config).
    kafka_security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = "SCRAM-SHA-512"
    kafka_username: str | None = None
    kafka_password: str | None = None
    # Operator tooling only (`keel up`, the test harness): the authenticated listener the services it
    # starts connect to, each as its own principal (keel.acl). Unset: they connect where this process does.
    kafka_service_bootstrap: str | None = None
    # The secret each principal's password is derived from (keel.acl.principal_password). The default is
    # for a local stack only; set a real secret wherever the broker is shared.
    kafka_credential_seed: str = "keel-dev-credential-seed"
    schema_registry_url: str = "http://127.0.0.1:8081"
    data_dir: Path = REPO_ROOT / "var"
    # Every run_id-keyed topic gets this partition count (co-partitioning).
    topic_partitions: int = Field(default=3, ge=1)
    topic_replication: int = Field(default=1, ge=1)
    # Largest message value the bus accepts; bigger payloads belong in the blob store.
    max_message_bytes: int = Field(default=1_000_000, ge=1024)
    # Payloads (run inputs, tool payloads and results, model outputs) larger than this travel by reference:
    # stored in the blob store (keel.blobs), the event or command carrying only their `sha256:` ref.
    blob_threshold_bytes: int = Field(default=64 * 1024, ge=1024)
    # Where blobs live: any fsspec URL (s3://, gs://, az:// with that protocol's fsspec package
    # installed); a directory under the data dir by default.
    blob_url: str | None = None
    # A batch whose outputs the broker rejects this many times in a row is halved (see keel.splitting).
    split_after_aborts: int = Field(default=3, ge=1)
    # An instance renews its lease this often; a second process with the same instance id sees the
    # renewals and refuses to start, and a killed instance's lease is taken after one interval + 1 s.
    instance_lease_interval_s: float = Field(default=1.0, gt=0)
    # Transactions are committed at least this often while a loop has work in flight.
    batch_max_messages: int = Field(default=500, ge=1)
    poll_timeout_s: float = Field(default=0.2, gt=0)
    # The consumer group protocol: "classic" (the client-side range assignor, eager rebalances) or
    # "consumer" (KIP-848: the broker assigns, by its range assignor, and rebalances incrementally).
    group_protocol: Literal["classic", "consumer"] = "classic"
    # A batch that produces nothing (most run events, for the ledger and the scheduler) does not cost a
    # transaction of its own: its offsets go with the next one, or on their own after this long.
    offsets_max_delay_s: float = Field(default=1.0, ge=0)
    # Deadline of each transactional call (send offsets, commit, abort). No longer than the broker's
    # transaction timeout below: by then the broker has aborted the transaction anyway. A call stuck
    # past it (+5 s) has its producer replaced: after a broker's kill -9 the loops resume that soon.
    txn_timeout_s: float = Field(default=10.0, gt=0)
    # How long the broker lets a transaction stay open before aborting it. An instance that dies with a
    # transaction open and is NOT restarted under its own id (its partitions taken over by another)
    # holds read_committed readers of those partitions until this passes. A batch's transaction spans
    # only produce, send-offsets and commit (handling happens before it opens), so a short one is safe.
    transaction_timeout_s: float = Field(default=10.0, ge=1)
    # How long ended runs (scheduler) and committed keys (ledger, adapters' ledger view) stay in memory
    # and changelogs after they ended or committed; keel.run-events and keel.ledger keep the records.
    retention_horizon_s: float = Field(default=7 * 24 * 3600.0, gt=0)
    # The adapters' HTTP timeout (connect, write and read each). The scheduler needs it too: a lost tool
    # attempt may still be mid-call on a dead instance until its deadline plus this has passed.
    tool_timeout_s: float = Field(default=5.0, gt=0)
    # A loop that makes no progress for this long exits for its supervisor to restart it (see watchdog).
    stall_timeout_s: float = Field(default=120.0, gt=0)
    # The HTTP API, for the operator commands of the `keel` CLI. The default key is the local dev key
    # of tenant acme (see services.api.apikeys); production keys come from the environment.
    api_url: str = "http://127.0.0.1:8080"
    api_key: str = "acme-dev-key"
    # Postgres; DATABASE_URL (no prefix) wins, then KEEL_DATABASE_URL, else the embedded server.
    database_url: str | None = Field(default=None, validation_alias="DATABASE_URL")
    keel_database_url: str | None = Field(default=None, validation_alias="KEEL_DATABASE_URL")

    def record_limit(self) -> int:
        """The largest record batch producers send and every topic accepts (`message.max.bytes` of
        producers, `max.message.bytes` of topics): the same number on both sides, so nothing a producer
        accepts is refused by the broker. The margin over `max_message_bytes` leaves room for keys,
        headers and the batch framing."""
        return self.max_message_bytes + 64 * 1024

    def blob_root(self) -> str:
        return self.blob_url or str(self.data_dir / "blobs")

    def db_url(self) -> str | None:
        return self.database_url or self.keel_database_url


@cache
def get_settings() -> Settings:
    return Settings()
