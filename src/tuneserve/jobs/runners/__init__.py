"""What the scheduler asks of a runner, and the handle a runner gives back for one run.

Two runners conform: local.py (processes on this machine) and ray.py (Ray jobs on a cluster).
The scheduler knows them only through `Runner` and `RunHandle`; `RunState` (state.py) is what
`poll` answers. Structural types (typing.Protocol): a runner implements the methods, it
inherits nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

from tuneserve.jobs.runners.state import RunState


@runtime_checkable
class RunHandle(Protocol):
    """One attempt of one job, as its runner knows it."""

    job_id: str
    job_dir: Path

    @property
    def ref(self) -> str:
        """What the job's row records to find the run again (jobs.runner_ref): a pid, a Ray submission id."""
        ...

    @property
    def pid(self) -> int | None:
        """The process group of a local run (jobs.runner_pid); None where the run is not a local process."""
        ...

    @property
    def dashboard_url(self) -> str | None:
        """A page showing the run (the Ray dashboard's), shown in the job's metadata; None if there is none."""
        ...


@runtime_checkable
class Runner(Protocol):
    # True if a run outlives the worker that started it (another worker can `adopt` it).
    detachable: bool
    # True if a started run may wait for resources first (the job stays queued until `poll` says running).
    starts_pending: bool
    name: str  # "local", "ray": how events and the worker's banner name it

    def start(self, job_id: str, job_dir: Path, attempt: int = 1) -> RunHandle:
        """Start attempt `attempt` of the job: `python -m tuneserve.training JOB_DIR` somewhere."""
        ...

    def poll(self, handle: RunHandle) -> RunState:
        """Where the run is now; never raises for a blip (a runner answers "running" and asks again)."""
        ...

    def stop(self, handle: RunHandle, grace_s: float = 5.0, *, pause: bool = False) -> None:
        """End the run. `pause`: ask it to write a checkpoint at its next step first, waiting up to `grace_s`."""
        ...

    def failure_detail(self, handle: RunHandle) -> str:
        """The runner's account of a failed run (stderr's tail, Ray's message and logs), for the job's error."""
        ...

    def adopt(self, job_id: str, job_dir: Path, runner_ref: str | None) -> RunHandle | None:
        """The run of a job whose worker vanished, if it goes on and can be watched from here; else None."""
        ...

    def abandon(
        self, job_id: str, job_dir: Path, runner_pid: int | None, runner_ref: str | None, attempt: int | None = None
    ) -> None:
        """Make sure what a vanished worker left of the job's run is gone, so it never runs twice."""
        ...

    def describe(self, handle: RunHandle) -> str:
        """The run in words, for job events: "the training process", "Ray job ... (url)"."""
        ...
