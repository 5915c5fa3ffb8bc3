"""The serve lock: one full `tuneserve serve` per data dir.

Two servers on one data dir would each run a scheduler over the same jobs directory and (by default)
the same SQLite database, and each take the other's running jobs back as abandoned at start. The
lock is an advisory `flock` on `DATA_DIR/serve.lock`, held by an open descriptor for the life of the
process: the kernel lets it go when the process ends, however it ends (kill -9 included), so a
stale lock never blocks a restart. `serve --api-only` and `tuneserve worker` do not take it: they
share a data dir with a server by design (leases keep their work apart).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_NAME = "serve.lock"


class DataDirInUse(Exception):
    """Another live process holds the data dir's serve lock."""


def lock_data_dir(data_dir: Path) -> int:
    """Take the data dir's serve lock; return the descriptor that holds it (keep it open while serving).
    DataDirInUse, naming the holder's pid when it wrote one, if another process has it."""
    path = data_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by child processes (PEP 446)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        by = f" by process {holder}" if holder.isdigit() else ""
        raise DataDirInUse(f"the data dir {data_dir} is in use{by}: another `tuneserve serve` runs on it") from None
    # The pid is for the message above only; the lock itself is the flock.
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
