"""What a service plugs into the transactional loop: the processor interface and its record types."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import TopicPartition

from keel.serde import Contract


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed message, decoded into its contract type."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: Any
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class Output:
    """One message to produce inside the batch's transaction.

    `value` is a contract record (encoded with the topic's envelope), raw bytes (internal changelogs) or
    None (a tombstone: removes the key from a compacted topic).
    `partition` pins the partition, e.g. a changelog written beside the input partition it belongs to.
    """

    topic: str
    key: str | None
    value: Contract | bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    partition: int | None = None


@dataclass(frozen=True, slots=True)
class AfterCommit:
    """Work to do once the batch (and its offsets) committed: a call to the outside world, whose outputs
    commit in a second, short transaction. Nothing is held open across the call. A crash between the two
    loses the work, not the message: whoever waits for its result times out and retries it."""

    work: Callable[[], Sequence[Output]]


Handled = Output | AfterCommit


class Reject(Exception):  # noqa: N818 - it is a verdict, not an error of the loop
    """Raised by a processor for a message it must not process: the message is dead-lettered."""

    def __init__(self, reason: str, error_class: str = "invalid") -> None:
        super().__init__(reason)
        self.reason = reason
        self.error_class = error_class


class Processor:
    """What a service plugs into the loop. Subclass and override `handle`; hooks are optional.

    State is staged only together with an output (its changelog write, say): a batch whose messages
    yield no output and no after-commit work is not committed on its own (its offsets go with a later
    transaction), so it must have changed nothing that a crash would need to undo.

    `concurrency` > 1 lets the loop handle a batch's messages on that many threads (for processors that
    wait on the outside world, e.g. model and provider calls); outputs keep the messages' order.
    """

    concurrency = 1
    max_batch: int | None = None  # at most this many messages per batch (None: the settings' limit)

    def handle(self, record: Record) -> Sequence[Handled]:
        raise NotImplementedError

    def on_assign(self, partitions: list[TopicPartition]) -> None:
        """Partitions were assigned: stateful processors (re)load their state for them."""

    def on_revoke(self, partitions: list[TopicPartition]) -> None:
        """Partitions were taken away."""

    def on_abort(self) -> None:
        """The batch's transaction was aborted: drop state changed since the last commit."""

    def on_commit(self) -> None:
        """The batch's transaction committed: state changed since the last commit is now durable."""

    def max_wait_s(self, idle_wait_s: float) -> float:
        """How long the loop may block waiting for the next message. A processor whose `tick` will have
        outputs soon (calls finishing in the background) returns less, so they are not held back."""
        return idle_wait_s

    def tick(self, now_ms: int) -> Sequence[Output]:
        """Called on every loop turn, with or without messages: fire due timers. Outputs commit in the
        same transaction as the batch (or alone when there is none).

        A tick that raises does not stop the loop: the turn is aborted (`on_abort`) and rewound, the
        batch is committed without a tick on the next turn, and ticks resume after a growing pause.
        Handling a run whose timer cannot be processed (e.g. quarantine) is the processor's job."""
        return ()
