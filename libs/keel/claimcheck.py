"""Claim checks: payloads above the threshold leave events and commands for the blob store.

Where a record has a `*_json` field beside a `*_ref` field (run events, run requests, ledger records),
a large payload travels as the ref alone: `*_json` is null and `*_ref` is the content ref of the JSON,
`sha256:<hex of its canonical JSON>` — the same address events always carried, now also the blob's
name. Step and tool commands have no ref field beside their required JSON field; there the field holds
a claim check, the JSON object `{"$keel_blob": "sha256:..."}`, standing for the whole payload.

Offloading happens where Keel's services encode what they produce (`offload`), so no service core
changes; readers resolve on demand (`resolved_json`, `resolved_marker`): the scheduler's shell, the
executor and the adapters, and the API for a run's timeline. A missing blob raises `BlobMissing`.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from keel.blobs import BlobStore, is_ref, ref_of, store_for
from keel.contracts import LedgerRecord, RunEvent, RunRequested, StepCommand, ToolCommand
from keel.idempotency import canonical_json
from keel.settings import get_settings

# The one key of a claim-check object. A payload that is itself exactly such an object (a model can
# answer anything) is stored by reference like a large one, so it is never mistaken for a claim check.
MARKER_KEY = "$keel_blob"
_MARKER_PREFIX = '{"' + MARKER_KEY + '":'
_MARKER_MAX = len(_MARKER_PREFIX) + 80

# Record type -> its (json field, ref field) pairs; a ref field of None means a claim-check field.
_FIELDS: dict[type, tuple[tuple[str, str | None], ...]] = {
    RunEvent: (("input_json", "input_ref"), ("output_json", "output_ref")),
    RunRequested: (("input_json", "input_ref"),),
    LedgerRecord: (("output_json", "output_ref"),),
    StepCommand: (("input_json", None),),
    ToolCommand: (("payload_json", None),),
}


def marker(ref: str) -> dict[str, str]:
    return {MARKER_KEY: ref}


def marker_text(ref: str) -> str:
    return canonical_json(marker(ref))


def ref_of_marker(value: Any) -> str | None:
    """The ref a claim-check object names, or None when `value` is not one."""
    if isinstance(value, dict) and len(value) == 1 and is_ref(value.get(MARKER_KEY)):
        return str(value[MARKER_KEY])
    return None


def ref_of_marker_text(text: str | None) -> str | None:
    """The ref a claim-check JSON text names, or None (cheap for ordinary payloads: no parse)."""
    if text is None or len(text) > _MARKER_MAX or not text.startswith(_MARKER_PREFIX):
        return None
    try:
        return ref_of_marker(json.loads(text))
    except ValueError:
        return None


def too_large(text: str, threshold: int) -> bool:
    # A character is at most 4 bytes in UTF-8: short texts need no encoding to be judged.
    return len(text) > threshold or (len(text) * 4 > threshold and len(text.encode()) > threshold)


def store_json(store: BlobStore, tenant_id: str, text: str, ref: str | None = None) -> str:
    """Store a JSON text under its content ref (canonicalised if its bytes do not hash to `ref`)."""
    data = text.encode()
    if ref is not None and ref_of(data) != ref:
        data = canonical_json(json.loads(text)).encode()
    return store.put(tenant_id, data)


def offload(record: Any, store: BlobStore | None = None, threshold: int | None = None) -> Any:
    """`record` with every payload above the threshold moved to the blob store (a copy; the record
    itself when nothing is that large). Records of other types pass through."""
    fields = _FIELDS.get(type(record))
    if not fields:
        return record
    limit = get_settings().blob_threshold_bytes if threshold is None else threshold
    changes: dict[str, Any] = {}
    for json_field, ref_field in fields:
        text = getattr(record, json_field)
        if text is None:
            continue
        # A payload that itself looks like a claim check goes by reference too, whatever its size, so a
        # reader resolving the field gets exactly it back (one level: the claim check is never re-read).
        if not too_large(text, limit) and (ref_field is not None or ref_of_marker_text(text) is None):
            continue
        store = store or store_for(get_settings())
        if ref_field is None:
            changes[json_field] = marker_text(store_json(store, record.tenant_id, text))
        else:
            ref = store_json(store, record.tenant_id, text, getattr(record, ref_field))
            changes[json_field], changes[ref_field] = None, ref
    return dataclasses.replace(record, **changes) if changes else record


def resolved_json(store: BlobStore, tenant_id: str, text: str | None, ref: str | None) -> str | None:
    """The JSON of a `*_json`/`*_ref` pair: inline if there, else the blob's; raises BlobMissing."""
    if text is not None or ref is None:
        return text
    return store.get(tenant_id, ref).decode()


def resolved_marker(store: BlobStore, tenant_id: str, text: str) -> str:
    """A command's JSON field with its claim check, if it holds one, replaced by the payload."""
    ref = ref_of_marker_text(text)
    return text if ref is None else store.get(tenant_id, ref).decode()


def resolved_command(store: BlobStore, cmd: Any) -> Any:
    """A step or tool command with its payload in place (a copy, when it travelled by reference)."""
    for json_field, _ in _FIELDS.get(type(cmd), ()):
        text = getattr(cmd, json_field)
        full = resolved_marker(store, cmd.tenant_id, text)
        if full is not text:
            cmd = dataclasses.replace(cmd, **{json_field: full})
    return cmd
