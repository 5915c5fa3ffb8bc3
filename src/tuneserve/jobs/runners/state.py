"""What a runner says about one run, in the same words for every runner, and what of a run's output a client reads."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class RunState:
    """pending: submitted, waiting for resources (the job shows `queued`); running; exited (with the
    training program's exit code); stopped: ended by someone else than tuneserve (the job is cancelled)."""

    phase: Literal["pending", "running", "exited", "stopped"]
    returncode: int | None = None
    detail: str | None = None  # the runner's own words, e.g. Ray's status message


def last_error_line(stderr: str, where: str = "the job's stderr.log on the server") -> str:
    """What the client reads of a run that died without its own error event: the last line of its stderr that is
    not a traceback frame (the exception, e.g. `RuntimeError: ...`), with directories cut from any path in it. The
    traceback and the server's paths stay in the job's stderr.log, for the operator."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    message = next((line for line in reversed(lines) if not line.startswith(("File ", "Traceback", "^", "~"))), "")
    message = re.sub(r"(?<![\w.])/(?:[^\s/'\"]+/)+", "", message)  # /a/b/c.py -> c.py
    return f"{message[:500]} (the whole error is in {where})" if message else ""
