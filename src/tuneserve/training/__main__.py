"""The training process: `python -m tuneserve.training JOB_DIR`.

Owns: the process boundary. Reads JOB_DIR/spec.json, runs `run.train`, exits 0; on any error it
writes one error message event (what the server shows the user), prints the traceback to stderr
(what an operator debugs with) and exits 1. Does not own training itself (run.py, recipes/).
SIGTERM (pause, cancel, server shutdown) asks the run to stop at the next step boundary after
writing a checkpoint; the process then exits with 143 (128 + SIGTERM). A second SIGTERM, or
SIGKILL, ends it at once; the newest complete checkpoint is where a rerun resumes.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from pathlib import Path

from tuneserve.training.events import EventWriter

USAGE = "usage: python -m tuneserve.training JOB_DIR"


def main(argv: list[str] | None = None) -> int:
    from tuneserve.training.run import job_dir_from_argv

    job_dir = job_dir_from_argv(argv, USAGE)
    if job_dir is None:
        return 2
    # Before torch loads OpenMP: with the default (spinning) wait policy, a 2-core machine shared
    # with the server or another job ran a SmolLM2 step about 10x slower than with PASSIVE.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from tuneserve import quiet_torchao

    quiet_torchao()
    stop = _StopOnSigterm()
    try:
        # Imported here so that even a broken install (no torch) is reported as an event.
        from tuneserve.training.run import train
        from tuneserve.training.spec import TrainingSpec

        result = train(TrainingSpec.read(job_dir), job_dir, progress=sys.stderr.isatty(), stop_requested=stop)
    except Exception as exc:
        traceback.print_exc()
        _report(job_dir, f"{type(exc).__name__}: {exc}")
        return 1
    return STOPPED_EXIT_CODE if result.get("type") == "stopped" else 0


STOPPED_EXIT_CODE = 128 + signal.SIGTERM


class _StopOnSigterm:
    """The first SIGTERM sets a flag the training loop polls between steps; the second one ends
    the process at once (default action), for a run stuck inside a step."""

    def __init__(self):
        self.requested = False
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame) -> None:
        self.requested = True
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    def __call__(self) -> bool:
        return self.requested


def _report(job_dir: Path, message: str) -> None:
    """Best effort: if even the event file cannot be written, the traceback on stderr remains.
    In a multi-process run each failing rank reports, saying which it is."""
    rank, world = os.environ.get("RANK", "0"), os.environ.get("WORLD_SIZE", "1")
    if world != "1":
        message = f"rank {rank} of {world}: {message}"
    try:
        events = EventWriter(job_dir / "events.jsonl")
        events.message(message, level="error")
        events.close()
    except OSError:
        traceback.print_exc()


if __name__ == "__main__":
    sys.exit(main())
