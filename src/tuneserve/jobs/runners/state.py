"""What a runner says about one run, in the same words for every runner."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class RunState:
    """pending: submitted, waiting for resources (the job shows `queued`); running; exited (with the
    training program's exit code); stopped: ended by someone else than tuneserve (the job is cancelled)."""

    phase: Literal["pending", "running", "exited", "stopped"]
    returncode: int | None = None
    detail: str | None = None  # the runner's own words, e.g. Ray's status message
