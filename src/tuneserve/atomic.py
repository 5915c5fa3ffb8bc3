"""Atomic directory writes: a reader (or a restarted process) sees the old directory or the
complete new one, never a half-written one that looks whole. Used for models, checkpoints,
final adapters and exports."""

from __future__ import annotations

import os
import shutil
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
