"""The blob store: content addressing, tenant scoping, write-once, digest checks, retention selection."""

from __future__ import annotations

import os

import pytest

from keel.blobs import BlobCorrupt, BlobMissing, BlobStore, StoredBlob, expired, ref_of, sweep

DATA = b'{"body":"' + b"x" * 100_000 + b'"}'


@pytest.fixture(params=["local", "memory"])
def store(request, tmp_path) -> BlobStore:
    # The local directory (temp file + rename) and an fsspec object-store-like filesystem (whole-object puts).
    if request.param == "local":
        return BlobStore(str(tmp_path / "blobs"))
    return BlobStore(f"memory://blobs-{os.urandom(4).hex()}")


def test_put_returns_the_sha256_of_the_bytes_and_get_gives_them_back(store):
    ref = store.put("acme", DATA)
    assert ref == ref_of(DATA) and ref.startswith("sha256:") and len(ref) == 7 + 64
    assert store.get("acme", ref) == DATA
    assert store.put("acme", DATA) == ref  # idempotent: the same bytes, the same blob
    assert [b.ref for b in store.listing()] == [ref]


def test_paths_are_tenant_scoped_and_another_tenant_cannot_read_by_ref(store):
    ref = store.put("acme", DATA)
    assert store.path("acme", ref).endswith(f"/acme/{ref[7:9]}/{ref[7:]}")
    with pytest.raises(BlobMissing) as err:
        store.get("globex", ref)
    assert ref in str(err.value) and "globex" in str(err.value) and "missing" in str(err.value)


def test_a_missing_blob_raises_naming_the_ref_and_tenant_never_returns_none(store):
    ref = ref_of(b"never stored")
    with pytest.raises(BlobMissing) as err:
        store.get("acme", ref)
    assert (err.value.ref, err.value.tenant_id) == (ref, "acme")
    stored = store.put("acme", DATA)
    store.delete("acme", stored)
    store.delete("acme", stored)  # deleting twice is fine
    with pytest.raises(BlobMissing):
        store.get("acme", stored)


def test_bytes_that_no_longer_match_their_digest_are_refused(store):
    ref = store.put("acme", DATA)
    store.fs.pipe_file(store.path("acme", ref), DATA + b" ")  # altered behind the store's back
    with pytest.raises(BlobCorrupt, match=ref):
        store.get("acme", ref)


@pytest.mark.parametrize(
    "tenant, ref",
    [("../etc", ref_of(b"x")), ("Acme", ref_of(b"x")), ("acme", "sha256:../../x"), ("acme", "md5:abc")],
)
def test_tenants_and_refs_that_could_escape_the_tenant_directory_are_refused(store, tenant, ref):
    with pytest.raises(ValueError):
        store.path(tenant, ref)


def test_a_local_write_leaves_no_temporary_file_and_a_repeat_refreshes_its_age(tmp_path):
    store = BlobStore(str(tmp_path))
    ref = store.put("acme", DATA)
    path = store.path("acme", ref)
    assert os.listdir(os.path.dirname(path)) == [ref[7:]]
    os.utime(path, (1_000, 1_000))
    store.put("acme", DATA)
    assert os.path.getmtime(path) > 1_000_000  # stored again now: retention counts from now


def test_sweep_selects_only_blobs_older_than_the_horizon_and_deletes_them(tmp_path):
    old, young = StoredBlob("acme", ref_of(b"a"), 100.0), StoredBlob("globex", ref_of(b"b"), 900.0)
    assert expired([old, young], now_s=1000.0, horizon_s=500.0) == [old]
    assert expired([old, young], now_s=1000.0, horizon_s=900.0) == [old]  # exactly at the horizon: gone
    assert expired([old, young], now_s=1000.0, horizon_s=901.0) == []

    store = BlobStore(str(tmp_path))
    kept, gone = store.put("acme", b"kept"), store.put("globex", b"gone")
    os.utime(store.path("globex", gone), (1_000, 1_000))
    (tmp_path / "acme" / "zz").mkdir()
    (tmp_path / "acme" / "zz" / "not-a-blob.tmp-1").write_bytes(b"half")  # a write under way
    deleted = sweep(store, horizon_s=3600)
    assert [(b.tenant_id, b.ref) for b in deleted] == [("globex", gone)]
    assert store.exists("acme", kept) and not store.exists("globex", gone)


def test_a_store_that_cannot_be_written_or_read_is_unavailable_which_loops_retry(tmp_path):
    from keel.blobs import BlobStoreUnavailable
    from keel.registryerrors import registry_unavailable

    (tmp_path / "file").write_bytes(b"not a directory")
    store = BlobStore(str(tmp_path / "file"))  # every path under it is unreachable
    with pytest.raises(BlobStoreUnavailable) as err:
        store.put("acme", DATA)
    assert registry_unavailable(err.value)  # the loop rewinds and retries; nothing is dead-lettered
    with pytest.raises(BlobStoreUnavailable):
        store.get("acme", ref_of(DATA))
