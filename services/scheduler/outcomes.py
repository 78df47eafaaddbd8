"""What a failed or lost attempt leads to: a retry (when, and why), a quarantine, or a failed run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from keel import events as ev
from keel.contracts import RetryDetail, RunEvent
from keel.vocab import SAFE_TO_REPEAT_MODES, TRANSIENT, UNKNOWN_OUTCOME, VALIDATION
from services.scheduler import fallbacks
from services.scheduler.retry import decide_retry
from services.scheduler.state import WAITING_RETRY, RunState
from services.scheduler.units import Unit, unit_state
from services.scheduler.verdicts import Decision, event, fail, quarantine

# The idempotency mode ("provider_key", "lookup", "none") an adapter declares, by tool ("email@1").
ToolModes = Callable[[str], "str | None"]
# How long a tool's provider remembers idempotency keys (seconds), by tool; None: for as long as needed.
KeyRetention = Callable[[str], "float | None"]


def no_retention(tool: str) -> float | None:
    return None


# How long the adapters' HTTP client may still be in a call after its command's deadline. It must be at
# least the adapters' KEEL_TOOL_TIMEOUT_S (5 s by default), with a margin: that timeout applies to each
# phase of the call (connect, write, read) and not to the call as a whole.
DEFAULT_TOOL_CLIENT_TIMEOUT_MS = 10_000

# Attempts the adapter refused without calling the provider (circuit open, deadline passed, key in
# flight) do not count against a step's max_attempts; past this many they do, so a provider that stays
# unreachable still ends the run instead of retrying it forever.
MAX_FREE_ATTEMPTS = 50


@dataclass(frozen=True)
class Failure:
    """One failed or lost attempt, as the retry decision needs it."""

    failure_class: str
    mode: str | None = None
    error: str | None = None
    key: str | None = None
    retry_after_ms: int | None = None
    effect_accepted: bool = False  # the provider's answer proves it accepted the call
    blocked_reason: str | None = None  # the provider was not called at all
    not_before: int | None = None  # no next attempt before this (ms): the lost call may still be running
    mode_note: str | None = None  # why the mode the retry relies on is not the tool's own
    evidence: RunEvent | None = None


def _within_retention(
    state: RunState, unit: Unit, mode: str | None, now_ms: int, key_retention: KeyRetention
) -> tuple[str | None, str | None]:
    """The mode a repeat may rely on now: past the provider's key retention (counted from the unit's
    first attempt), the provider would take the key as new, so the mode is `none`."""
    retention = key_retention(unit.tool or "") if mode in SAFE_TO_REPEAT_MODES else None
    first = unit_state(state, unit).first_issued_at
    if retention is None or first is None or now_ms - first <= retention * 1000:
        return mode, None
    age_s = (now_ms - first) // 1000
    return (
        "none",
        f"the provider forgets idempotency keys after {retention:g} s and this key is {age_s} s old",
    )


def on_failure(
    state: RunState, unit: Unit, fact: RunEvent, now_ms: int, key_retention: KeyRetention = no_retention
) -> Decision:
    tool = fact.tool
    failure_class = (
        (tool.failure_class if tool else None)
        or (fact.step_detail.failure_class if fact.step_detail else None)
        or TRANSIENT
    )
    if failure_class == UNKNOWN_OUTCOME and unit.kind == "tool" and not unit.effects:
        failure_class = TRANSIENT  # a read whose answer was lost is read again: there is nothing to duplicate
    mode, note = _within_retention(
        state, unit, tool.idempotency_mode if tool else None, now_ms, key_retention
    )
    failure = Failure(
        failure_class,
        mode=mode,
        mode_note=note,
        error=fact.error,
        key=fact.idempotency_key,
        retry_after_ms=tool.retry_after_ms if tool else None,
        effect_accepted=bool(tool and tool.effect_accepted),
        blocked_reason=tool.blocked_reason if tool else None,
        evidence=fact,
    )
    return retry_or_stop(state, unit, failure, now_ms)


def on_timeout(
    state: RunState,
    unit: Unit,
    now_ms: int,
    tool_mode: ToolModes,
    tool_timeout_ms: int,
    key_retention: KeyRetention = no_retention,
) -> Decision:
    # The attempt never reported back: its worker died or stalled mid-call. For a tool the call may have
    # reached the provider, so the outcome is unknown, and the call may even still be running: the next
    # attempt under the same key waits until it must have ended. An llm step has no side effect.
    step = unit_state(state, unit)
    error = f"attempt {step.attempt} timed out after {unit.timeout_ms} ms without a result"
    if not unit.effects:
        return retry_or_stop(state, unit, Failure(TRANSIENT, error=error), now_ms)
    deadline = step.deadline if step.deadline is not None else now_ms
    mode, note = _within_retention(state, unit, tool_mode(unit.tool or ""), now_ms, key_retention)
    failure = Failure(
        UNKNOWN_OUTCOME,
        mode=mode,
        mode_note=note,
        error=error,
        key=step.idempotency_key,
        not_before=deadline + tool_timeout_ms,
    )
    return retry_or_stop(state, unit, failure, now_ms)


def retry_or_stop(state: RunState, unit: Unit, failure: Failure, now_ms: int) -> Decision:
    step = unit_state(state, unit)
    step.last_failure = failure.failure_class
    if failure.blocked_reason:
        step.blocked += 1
    counted = step.attempt - min(step.blocked, MAX_FREE_ATTEMPTS)
    seed = f"{state.run_id}|{unit.step}|{step.attempt}"
    if unit.call is not None:
        seed = f"{state.run_id}|{unit.step}|{unit.call}|{step.attempt}"
    decision = decide_retry(
        unit.retry,
        failure.failure_class,
        counted,
        idempotency_mode=failure.mode,
        retry_after_ms=failure.retry_after_ms,
        seed=seed,
    )
    if decision.action == "retry":
        return _retry(state, unit, failure, decision.reason, now_ms + decision.delay_ms, now_ms)
    # A side effect that happened, or may have, is never forgotten by failing the run: it is held.
    if unit.effects and decision.action == "fail" and failure.effect_accepted:
        reason = f"the provider accepted the call but its answer broke the contract ({decision.reason})"
        return _hold(state, unit, failure, reason, now_ms)
    if unit.effects and decision.action == "fail" and failure.failure_class == UNKNOWN_OUTCOME:
        reason = f"{decision.reason}; the last attempt's outcome is unknown, so its effect may exist"
        return _hold(state, unit, failure, reason, now_ms)
    if decision.action == "quarantine":
        reason = decision.reason if failure.mode_note is None else f"{decision.reason} ({failure.mode_note})"
        return _hold(state, unit, failure, reason, now_ms)
    refused_input = failure.failure_class == VALIDATION and failure.blocked_reason is not None
    if unit.effects and decision.action == "fail" and refused_input:
        # The rendered input breaks the tool's input contract and nothing was sent: a human can correct
        # the input (an edit, under a new key) or fail the run; failing it here would lose that choice.
        reason = f"the input breaks the tool's contract, so nothing was sent ({failure.error})"
        return _hold(state, unit, failure, reason, now_ms)
    if unit.hold_invalid and decision.action == "fail" and failure.failure_class == VALIDATION:
        reason = f"the model's answer breaks the step's output schema, also when asked again: {failure.error}"
        return _hold(state, unit, failure, reason, now_ms)
    reason = f"step {unit.label} attempt {step.attempt}: {decision.reason}: {failure.error}"
    fell = _fall_back(state, unit, unit.on_failure, failure, f"would fail the run: {reason}", now_ms)
    return fell or fail(state, now_ms, reason, unit.step)


def _fall_back(
    state: RunState, unit: Unit, to: str | None, failure: Failure, reason: str, now_ms: int
) -> Decision | None:
    """The step's declared fallback instead of a quarantine or a failed run (None: it declares none)."""
    return fallbacks.degrade(
        state,
        unit.step,
        to,
        now_ms,
        because=reason,
        failure_class=failure.failure_class,
        error=failure.error,
        key=failure.key,
        evidence=failure.evidence,
        effect_may_exist=failure.effect_accepted,
    )


def _hold(state: RunState, unit: Unit, failure: Failure, reason: str, now_ms: int) -> Decision:
    fell = _fall_back(state, unit, unit.on_quarantine, failure, f"would be quarantined: {reason}", now_ms)
    if fell is not None:
        return fell
    return quarantine(
        state,
        unit.step,
        now_ms,
        reason,
        failure.failure_class,
        error=failure.error,
        key=failure.key,
        evidence=failure.evidence,
        call=unit.call,
    )


def _retry(state: RunState, unit: Unit, failure: Failure, reason: str, fire_at: int, now_ms: int) -> Decision:
    step = unit_state(state, unit)
    if failure.blocked_reason:
        reason = (
            f"{failure.blocked_reason}: the provider was not called, so the attempt is not counted; {reason}"
        )
    if failure.not_before is not None and fire_at < failure.not_before:
        fire_at = failure.not_before
        reason += "; not before the lost attempt's call must have ended (its deadline + the client timeout)"
    step.status, step.fire_at, step.deadline = WAITING_RETRY, fire_at, None
    return Decision(
        state,
        [
            event(
                state,
                ev.RETRY_SCHEDULED,
                now_ms,
                unit.step,
                step.attempt,
                call=unit.call,
                agent_id=unit.agent_id if unit.call is not None else None,
                idempotency_key=failure.key,
                error=failure.error,
                retry=RetryDetail(
                    failure_class=failure.failure_class,
                    reason=reason,
                    delay_ms=fire_at - now_ms,
                    fire_at=ev.at_ms(fire_at),
                    next_attempt=step.attempt + 1,
                ),
            )
        ],
    )
