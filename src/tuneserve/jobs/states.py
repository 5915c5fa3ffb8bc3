"""Job statuses (OpenAI's, and tuneserve's `paused`) and which changes between them are allowed.

MOVES is the whole state machine; jobs/lifecycle.py's `transition` is the one place that changes a
job's status, and it refuses a move that is not in this table.
"""

VALIDATING = "validating_files"
QUEUED = "queued"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"
PAUSED = "paused"

# from -> the statuses it may move to. Why each move exists:
MOVES: dict[str, frozenset[str]] = {
    # The files are checked (jobs/validation_stage.py): queued, or failed with the reason.
    VALIDATING: frozenset({QUEUED, FAILED, CANCELLED}),
    # A worker starts the run (at its claim, or when Ray says the run started); a run that cannot
    # start, or a held job whose run failed or was stopped outside tuneserve while pending, ends.
    QUEUED: frozenset({RUNNING, FAILED, CANCELLED, PAUSED}),
    # The run ends; or its worker stopped or vanished and the job waits for another (queued).
    RUNNING: frozenset({SUCCEEDED, FAILED, CANCELLED, QUEUED, PAUSED}),
    # Resume queues a paused job again; it continues from its last checkpoint.
    PAUSED: frozenset({QUEUED, CANCELLED}),
    SUCCEEDED: frozenset(),
    FAILED: frozenset(),
    CANCELLED: frozenset(),
}


def can_move(current: str, to: str) -> bool:
    """True if a job in `current` may become `to`."""
    return to in MOVES.get(current, frozenset())


def sources(to: str) -> frozenset[str]:
    """Every status a job may move to `to` from."""
    return frozenset(current for current, targets in MOVES.items() if to in targets)


TERMINAL = frozenset(status for status, targets in MOVES.items() if not targets)
CANCELLABLE = sources(CANCELLED)
PAUSABLE = sources(PAUSED)
