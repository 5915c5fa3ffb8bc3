"""Atomic writes: a reader (or a restarted process) sees the old directory or file or the
complete new one, never a half-written one that looks whole. Directories: models, checkpoints,
final adapters and exports. Single files: evaluation reports, synthesized data and its summary."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable


def write_dir_atomically(target: Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` on a temporary sibling directory, then rename it to `target`.

    An existing `target` is replaced only once the new one is complete. On any error the
    temporary directory is removed and `target` is left as it was.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write(tmp)
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def write_text_atomically(path: Path, text: str) -> Path:
    """Write `text` (UTF-8) to a uniquely named temporary file beside `path`, flushed to disk, then
    rename it to `path`. Writers racing on the same `path` never share a temporary file; the last
    rename wins. On any error the temporary file is removed and `path` is left as it was."""
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
