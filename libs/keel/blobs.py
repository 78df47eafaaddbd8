"""The blob store: content-addressed, tenant-scoped, write-once storage of large payloads.

Events and commands stay small: a payload above the threshold (`KEEL_BLOB_THRESHOLD_BYTES`) is stored
here and travels as its ref, `sha256:<hex of the stored bytes>` (see keel.claimcheck). Storage goes
through fsspec, so the same code serves a local directory (the default, under the data dir) and object
stores by URL (`KEEL_BLOB_URL=s3://bucket/keel`, `gs://`, `az://`, with that protocol's package).

- Paths are `<root>/<tenant>/<hex[:2]>/<hex>`: one tenant can never read another's blob, even by ref.
- Write-once and idempotent: the same bytes always land at the same path; a local write goes to a
  temporary file renamed into place, so a reader never sees half a blob. Putting bytes that are already
  there refreshes their age, so retention counts from the last time anything stored them.
- `get` verifies the digest, and a blob that is not there raises `BlobMissing` naming the ref and the
  tenant: a missing payload is an error, never a silent null.
- Retention: `expired` is the pure choice of blobs older than the horizon; `sweep` deletes them.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from keel.intake import TENANT_PATTERN
from keel.registryerrors import RegistryUnavailable
from keel.settings import Settings

REF_PATTERN = r"^sha256:[0-9a-f]{64}$"
_REF = re.compile(REF_PATTERN)
_TENANT = re.compile(TENANT_PATTERN)


class BlobMissing(LookupError):
    """A ref names a blob the store does not hold for this tenant (deleted, expired, never stored)."""

    def __init__(self, tenant_id: str, ref: str, where: str) -> None:
        super().__init__(f"blob {ref} of tenant {tenant_id} is missing from the blob store ({where})")
        self.tenant_id, self.ref = tenant_id, ref


class BlobStoreUnavailable(RegistryUnavailable):
    """The blob store could not be read or written just now (an I/O error, an object store away). A
    loop treats it as it treats a schema registry outage: the batch is rewound and retried after a
    pause; no message is dead-lettered and no run held for it."""


class BlobCorrupt(ValueError):
    """The stored bytes do not hash to their ref: the blob was altered after it was written."""


def ref_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def is_ref(value: object) -> bool:
    return isinstance(value, str) and _REF.match(value) is not None


@dataclass(frozen=True, slots=True)
class StoredBlob:
    """One blob as the store lists it: whose, which, and when it was last stored (epoch seconds)."""

    tenant_id: str
    ref: str
    stored_at: float


class BlobStore:
    def __init__(self, url: str, threshold_bytes: int = 64 * 1024) -> None:
        self.url, self.threshold_bytes = url, threshold_bytes
        self.fs, root = fsspec.core.url_to_fs(url)
        self.root = root.rstrip("/")
        self.local = isinstance(self.fs, LocalFileSystem)

    def path(self, tenant_id: str, ref: str) -> str:
        if not _TENANT.match(tenant_id or ""):
            raise ValueError(f"tenant_id {tenant_id!r} must match {TENANT_PATTERN}")
        if not is_ref(ref):
            raise ValueError(f"blob ref {ref!r} must match {REF_PATTERN}")
        digest = ref.removeprefix("sha256:")
        return f"{self.root}/{tenant_id}/{digest[:2]}/{digest}"

    def put(self, tenant_id: str, data: bytes) -> str:
        """Store `data` for the tenant; returns its ref. Idempotent: the same bytes, the same ref."""
        ref = ref_of(data)
        path = self.path(tenant_id, ref)
        try:
            if self.local:
                self._put_local(path, data)
            else:
                # An object store writes an object whole or not at all; re-writing the same bytes is
                # harmless and refreshes the object's age for retention.
                self.fs.pipe_file(path, data)
        except Exception as exc:
            raise BlobStoreUnavailable(f"cannot store blob {ref} in {self.url}: {exc}") from exc
        return ref

    def _put_local(self, path: str, data: bytes) -> None:
        if os.path.exists(path):
            os.utime(path)  # stored again: its retention counts from now
            return
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        with open(tmp, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)  # atomic: readers see the whole blob or none

    def get(self, tenant_id: str, ref: str) -> bytes:
        """The bytes of `ref` for the tenant; raises BlobMissing, or BlobCorrupt if they do not match."""
        path = self.path(tenant_id, ref)
        try:
            data = bytes(self.fs.cat_file(path))
        except FileNotFoundError:
            raise BlobMissing(tenant_id, ref, self.url) from None
        except Exception as exc:
            raise BlobStoreUnavailable(f"cannot read blob {ref} from {self.url}: {exc}") from exc
        if ref_of(data) != ref:
            raise BlobCorrupt(f"blob {ref} of tenant {tenant_id} does not match its digest ({self.url})")
        return data

    def exists(self, tenant_id: str, ref: str) -> bool:
        return bool(self.fs.exists(self.path(tenant_id, ref)))

    def delete(self, tenant_id: str, ref: str) -> None:
        try:
            self.fs.rm_file(self.path(tenant_id, ref))
        except FileNotFoundError:
            pass  # already gone: deleting is idempotent

    def listing(self) -> Iterator[StoredBlob]:
        """Every blob of every tenant (temporary files of writes under way are not blobs)."""
        if not self.fs.exists(self.root):
            return
        for path, info in self.fs.find(self.root, detail=True).items():
            parts = str(path).rstrip("/").split("/")
            if len(parts) < 3 or not re.fullmatch(r"[0-9a-f]{64}", parts[-1]):
                continue
            yield StoredBlob(parts[-3], "sha256:" + parts[-1], _mtime(info))


def _mtime(info: dict[str, Any]) -> float:
    for name in ("mtime", "LastModified", "last_modified", "updated", "created"):
        value = info.get(name)
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, str):
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    return time.time()  # no age known: never old enough to delete


def expired(blobs: Iterable[StoredBlob], now_s: float, horizon_s: float) -> list[StoredBlob]:
    """The blobs last stored longer ago than the horizon: no event still on the log can need them.

    The horizon is the run-event retention (`KEEL_RETENTION_HORIZON_S` by default): an event older than
    that is gone from keel.run-events, and any payload still referenced by a younger event was stored
    (or stored again, which refreshes its age) no earlier than that event was written."""
    return [b for b in blobs if b.stored_at + horizon_s <= now_s]


def sweep(store: BlobStore, horizon_s: float, now_s: float | None = None) -> list[StoredBlob]:
    """Delete the expired blobs; returns what was deleted."""
    gone = expired(store.listing(), time.time() if now_s is None else now_s, horizon_s)
    for blob in gone:
        store.delete(blob.tenant_id, blob.ref)
    return gone


@cache
def _store(url: str, threshold_bytes: int) -> BlobStore:
    return BlobStore(url, threshold_bytes)


def store_for(settings: Settings) -> BlobStore:
    """The process's blob store, as its settings name it (one instance per URL)."""
    return _store(settings.blob_root(), settings.blob_threshold_bytes)
