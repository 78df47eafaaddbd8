"""Large payloads around the scheduler's pure core: resolved before it decides, put away after.

The core renders step inputs from the run input and committed outputs, and derives each tool step's
idempotency key from the whole rendered payload: it must see the values, never their refs, so a key is
the same whether a payload travelled inline or by reference. Its state must stay small, though: it is
held in memory and written to the changelog after every change. So the shell

- resolves what a message carries by reference (a request's input_ref and a re-run's reused outputs,
  a commit's output_ref);
- before a message that can render a step (a request, a commit), puts the values back in the state;
- after the decision, puts every value above the blob threshold back in the blob store, leaving a
  claim-check object (`{"$keel_blob": ref}`) in its place; a step's rendered command input, kept for its
  retries, becomes the claim-check text the commands carry. (`dehydrate` only ever follows `hydrate`,
  or starts a run, so every claim-check-shaped value it meets is data, stored by reference as well.)

Anything missing raises `BlobMissing`, naming the ref and the tenant.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import keel.events as ev
from keel.blobs import BlobStore
from keel.claimcheck import marker, marker_text, ref_of_marker, resolved_json, store_json, too_large
from keel.contracts import ControlCommand, RunEvent, RunRequested
from keel.idempotency import canonical_json
from services.scheduler.state import RunState


def renders(message: Any) -> bool:
    """Whether the core may render step inputs for this message (so it needs the values): a request, a
    commit, an agent turn's answer (it may start the next turn), or a decision or a resume (they may
    commit a supplied output, and start the steps after it)."""
    if isinstance(message, ControlCommand):
        return message.action in ("decide", "resume")
    return isinstance(message, RunRequested) or (
        isinstance(message, RunEvent)
        and (
            message.event == ev.STEP_COMMITTED
            or (message.event == ev.MODEL_CALLED and message.call is not None)
        )
    )


def resolve_message(store: BlobStore, message: Any) -> Any:
    """The message with the payload the core reads in place: a request's input, a commit's output."""
    if isinstance(message, RunRequested) and message.input_json is None and message.input_ref:
        text = resolved_json(store, message.tenant_id, None, message.input_ref)
        message = dataclasses.replace(message, input_json=text)
    if isinstance(message, RunRequested) and message.reused_json:  # a re-run: its reused outputs' values
        reused = json.loads(message.reused_json)
        if isinstance(reused, dict):
            values = {step: _value(store, message.tenant_id, out) for step, out in reused.items()}
            return dataclasses.replace(message, reused_json=canonical_json(values))
    if isinstance(message, RunRequested):
        return message
    if (
        isinstance(message, RunEvent)
        and renders(message)
        and message.output_json is None
        and message.output_ref
    ):
        text = resolved_json(store, message.tenant_id, None, message.output_ref)
        return dataclasses.replace(message, output_json=text)
    return message


def _value(store: BlobStore, tenant_id: str, value: Any) -> Any:
    ref = ref_of_marker(value)
    return value if ref is None else json.loads(store.get(tenant_id, ref))


def hydrate(store: BlobStore, state: RunState) -> None:
    """Put the run input and the committed outputs back in the state (in place)."""
    state.input = _value(store, state.tenant_id, state.input)
    for step in state.steps.values():
        step.output = _value(store, state.tenant_id, step.output)
        if step.agent is not None:  # the conversation, and the results of the turn's calls
            step.agent.messages = _value(store, state.tenant_id, step.agent.messages)
            for call in step.agent.calls.values():
                call.output = _value(store, state.tenant_id, call.output)


def _stored(store: BlobStore, tenant_id: str, value: Any, threshold: int) -> Any:
    if value is None:
        return value
    text = canonical_json(value)
    # After `hydrate`, a value shaped like a claim check is the run's own data (a model may answer with
    # anything): it goes by reference too, so the next `hydrate` gives exactly it back.
    if not too_large(text, threshold) and ref_of_marker(value) is None:
        return value
    return marker(store_json(store, tenant_id, text))


def dehydrate(store: BlobStore, state: RunState, threshold: int) -> None:
    """Leave only small values in the state (in place): large ones by their claim check."""
    state.input = _stored(store, state.tenant_id, state.input, threshold)
    for step in state.steps.values():
        step.output = _stored(store, state.tenant_id, step.output, threshold)
        subs = [step]
        if step.agent is not None:
            step.agent.messages = _stored(store, state.tenant_id, step.agent.messages, threshold)
            subs += list(step.agent.units().values())
            for call in step.agent.calls.values():
                call.output = _stored(store, state.tenant_id, call.output, threshold)
        for sub in subs:
            if sub.input_json is not None and too_large(sub.input_json, threshold):
                sub.input_json = marker_text(store_json(store, state.tenant_id, sub.input_json))
