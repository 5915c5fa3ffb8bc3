"""Job statuses (OpenAI's) and which changes are allowed."""

VALIDATING = "validating_files"
QUEUED = "queued"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"
PAUSED = "paused"

TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})
CANCELLABLE = frozenset({VALIDATING, QUEUED, RUNNING, PAUSED})
PAUSABLE = frozenset({QUEUED, RUNNING})
