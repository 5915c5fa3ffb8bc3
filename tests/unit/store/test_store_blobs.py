"""BlobStore: bytes under the file id, written atomically (temp file, fsync, rename)."""

from __future__ import annotations

import io

import pytest

from tuneserve.store import blobs as blobs_module
from tuneserve.store.blobs import BlobStore, BlobTooLarge


class CrashingStream(io.RawIOBase):
    """Yields `good_chunks` chunks, then fails like a dropped connection."""

    def __init__(self, good_chunks: int, chunk: bytes = b"x" * 100):
        self.left = good_chunks
        self.chunk = chunk
        self.reads = 0

    def read(self, size=-1):
        self.reads += 1
        if self.left == 0:
            raise ConnectionResetError("client went away")
        self.left -= 1
        return self.chunk


def files_under(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_write_stores_under_the_id(tmp_path):
    store = BlobStore(tmp_path / "files")
    data = bytes(range(256)) * 50
    assert store.write_bytes("file-abc123", data) == len(data)
    assert store.path("file-abc123") == tmp_path / "files" / "file-abc123"
    assert store.path("file-abc123").read_bytes() == data
    assert files_under(tmp_path / "files") == ["file-abc123"]  # no .part left behind


def test_write_streams_in_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(blobs_module, "CHUNK", 7)
    store = BlobStore(tmp_path)
    data = b"0123456789" * 10
    assert store.write("b1", io.BytesIO(data)) == 100
    assert store.path("b1").read_bytes() == data


def test_crash_mid_write_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(blobs_module, "CHUNK", 100)
    store = BlobStore(tmp_path / "files")
    source = CrashingStream(good_chunks=3)
    with pytest.raises(ConnectionResetError):
        store.write("file-crash", source)
    assert source.reads == 4  # it did write some chunks before failing
    assert not store.path("file-crash").exists()
    assert files_under(tmp_path / "files") == []
    assert list((tmp_path / "files" / ".partial").iterdir()) == []


def test_crash_mid_overwrite_keeps_the_old_bytes(tmp_path, monkeypatch):
    monkeypatch.setattr(blobs_module, "CHUNK", 100)
    store = BlobStore(tmp_path)
    store.write_bytes("b1", b"old")
    with pytest.raises(ConnectionResetError):
        store.write("b1", CrashingStream(good_chunks=2))
    assert store.path("b1").read_bytes() == b"old"


def test_too_large_leaves_nothing(tmp_path):
    store = BlobStore(tmp_path)
    with pytest.raises(BlobTooLarge):
        store.write("big", io.BytesIO(b"x" * 11), max_bytes=10)
    assert files_under(tmp_path) == []
    assert store.write("fits", io.BytesIO(b"x" * 10), max_bytes=10) == 10  # the limit itself is allowed


def test_stale_partials_are_cleaned_at_start(tmp_path):
    partial = tmp_path / "files" / ".partial"
    partial.mkdir(parents=True)
    (partial / "file-old.part").write_bytes(b"half an upload")
    (partial / "file-older.part").write_bytes(b"")
    (tmp_path / "files" / "file-kept").write_bytes(b"whole")

    BlobStore(tmp_path / "files")

    assert list(partial.iterdir()) == []
    assert (tmp_path / "files" / "file-kept").read_bytes() == b"whole"


@pytest.mark.parametrize("bad", ["../../etc/passwd", "a/b", "..", "", "x" * 65, "file id", "/abs"])
def test_path_rejects_anything_but_an_id(tmp_path, bad):
    store = BlobStore(tmp_path)
    with pytest.raises(ValueError):
        store.path(bad)
    with pytest.raises(ValueError):
        store.write_bytes(bad, b"data")
    assert files_under(tmp_path) == []


def test_delete(tmp_path):
    store = BlobStore(tmp_path)
    store.write_bytes("b1", b"data")
    store.delete("b1")
    assert not store.path("b1").exists()
    store.delete("b1")  # deleting twice is fine
