"""Uploaded bytes, stored by file id under the data dir; never under the user's filename.

Writes go to a temporary file, are fsynced, then renamed into place: a crash mid-upload
leaves at most a `.part` file that is never mistaken for a whole one, and a full disk leaves
none: the part is removed and errors.InsufficientStorage raised (a 507 for the uploader).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import BinaryIO

from tuneserve.atomic import disk_full_is_insufficient_storage

_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
CHUNK = 1024 * 1024


class BlobTooLarge(Exception):
    pass


class BlobStore:
    def __init__(self, root: Path):
        self.root = root
        self._tmp = root / ".partial"
        self._tmp.mkdir(parents=True, exist_ok=True)
        for stale in self._tmp.iterdir():  # leftovers of a crash mid-write
            stale.unlink(missing_ok=True)

    def path(self, blob_id: str) -> Path:
        if not _SAFE_ID.match(blob_id):
            raise ValueError(f"not a blob id: {blob_id!r}")
        return self.root / blob_id

    def write(self, blob_id: str, source: BinaryIO, max_bytes: int | None = None) -> int:
        """Copy a stream into the blob atomically; return its size. BlobTooLarge past max_bytes,
        InsufficientStorage when the disk fills up."""
        target = self.path(blob_id)
        part = self._tmp / f"{blob_id}.part"
        with disk_full_is_insufficient_storage("storing the uploaded file"):
            return _copy_into(source, part, target, max_bytes)

    def write_bytes(self, blob_id: str, data: bytes) -> int:
        import io

        return self.write(blob_id, io.BytesIO(data))

    def delete(self, blob_id: str) -> None:
        self.path(blob_id).unlink(missing_ok=True)


def _copy_into(source: BinaryIO, part: Path, target: Path, max_bytes: int | None) -> int:
    size = 0
    try:
        with part.open("wb") as out:
            while chunk := source.read(CHUNK):
                size += len(chunk)
                if max_bytes is not None and size > max_bytes:
                    raise BlobTooLarge(f"larger than {max_bytes} bytes")
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        part.replace(target)
    finally:
        part.unlink(missing_ok=True)
    return size
