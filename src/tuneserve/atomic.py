"""Atomic writes: a reader (or a restarted process) sees the old directory or file or the
complete new one, never a half-written one that looks whole. Directories: models, checkpoints,
final adapters and exports. Single files: evaluation reports, synthesized data and its summary.

Also owns telling a full disk apart from other write failures: a write that fails on a full disk
is raised as errors.InsufficientStorage (its message says to free space), after the temporary
copy is removed, which gives back the space it took.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from tuneserve.errors import InsufficientStorage

# ENOSPC: the file system is full; EDQUOT: the user's quota is (NFS and XFS report that one).
_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# Writers in Rust or C++ do not raise OSError: safetensors puts the OS message in its own error,
# and torch.save reports only "unexpected pos"; for those the file system is asked how full it is.
_DISK_FULL_MESSAGES = ("no space left on device", "disk quota exceeded", "database or disk is full")
_NEARLY_FULL_BYTES = 1024 * 1024


def is_disk_full(exc: BaseException, where: Path | None = None) -> bool:
    """Whether `exc`, raised by a write, means the disk was full. `where` (a path on the disk written
    to) lets a failure that does not say why count when that disk has (almost) no space left."""
    if isinstance(exc, InsufficientStorage):
        return True
    if isinstance(exc, OSError) and exc.errno in _DISK_FULL_ERRNOS:
        return True
    if any(text in str(exc).lower() for text in _DISK_FULL_MESSAGES):
        return True
    if where is None or not isinstance(exc, Exception):  # never relabel KeyboardInterrupt and the like
        return False
    try:
        return shutil.disk_usage(_existing(where)).free < _NEARLY_FULL_BYTES
    except OSError:
        return False


def insufficient_storage(exc: BaseException, writing: str) -> InsufficientStorage:
    """The InsufficientStorage for a disk-full `exc` raised while `writing` (an existing one as it is)."""
    if isinstance(exc, InsufficientStorage):
        return exc
    where = f" ({exc.filename})" if isinstance(exc, OSError) and exc.filename else ""
    return InsufficientStorage(f"no space left on device while {writing}{where}: free some disk space and try again")


@contextmanager
def disk_full_is_insufficient_storage(writing: str, where: Path | None = None) -> Iterator[None]:
    """Raise a disk-full failure inside the block as InsufficientStorage; others pass unchanged."""
    try:
        yield
    except Exception as exc:
        if not is_disk_full(exc, where):
            raise
        raise insufficient_storage(exc, writing) from exc


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def write_dir_atomically(target: Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` on a temporary sibling directory, then rename it to `target`.

    An existing `target` is replaced only once the new one is complete. On any error the
    temporary directory is removed and `target` is left as it was; a full disk is raised as
    InsufficientStorage.
    """
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        write(tmp)
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
    except BaseException as exc:
        full = is_disk_full(exc, target.parent)  # asked before the cleanup frees the space again
        shutil.rmtree(tmp, ignore_errors=True)
        if full:
            raise insufficient_storage(exc, f"writing {target}") from exc
        raise
    return target


def write_text_atomically(path: Path, text: str) -> Path:
    """Write `text` (UTF-8) to a uniquely named temporary file beside `path`, flushed to disk, then
    rename it to `path`. Writers racing on the same `path` never share a temporary file; the last
    rename wins. On any error the temporary file is removed and `path` is left as it was; a full
    disk is raised as InsufficientStorage."""
    with disk_full_is_insufficient_storage(f"writing {path}"):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return path
