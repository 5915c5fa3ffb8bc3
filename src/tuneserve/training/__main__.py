"""The training process: `python -m tuneserve.training JOB_DIR`.

Owns: the process boundary. Reads JOB_DIR/spec.json, runs `run.train`, exits 0; on any error it
writes one error message event (what the server shows the user), prints the traceback to stderr
(what an operator debugs with) and exits 1. Does not own training itself (run.py, recipes/).
SIGTERM keeps its default meaning: the process ends at once; the newest complete checkpoint
is where a rerun resumes.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

from tuneserve.training.events import EventWriter

USAGE = "usage: python -m tuneserve.training JOB_DIR"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] in ("-h", "--help"):
        print(USAGE, file=sys.stderr)
        return 2
    job_dir = Path(args[0])
    # Before torch loads OpenMP: with the default (spinning) wait policy, a 2-core machine shared
    # with the server or another job ran a SmolLM2 step about 10x slower than with PASSIVE.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        # Imported here so that even a broken install (no torch) is reported as an event.
        from tuneserve.training.run import train
        from tuneserve.training.spec import TrainingSpec

        train(TrainingSpec.read(job_dir), job_dir, progress=sys.stderr.isatty())
    except Exception as exc:
        traceback.print_exc()
        _report(job_dir, f"{type(exc).__name__}: {exc}")
        return 1
    return 0


def _report(job_dir: Path, message: str) -> None:
    """Best effort: if even the event file cannot be written, the traceback on stderr remains."""
    try:
        events = EventWriter(job_dir / "events.jsonl")
        events.message(message, level="error")
        events.close()
    except OSError:
        traceback.print_exc()


if __name__ == "__main__":
    sys.exit(main())
