"""The Ray runner: each attempt of a job is a Ray job (the Ray Jobs API) on an existing cluster,
running `python -m tuneserve.training.ray_train JOB_DIR`, which trains with Ray Train's
TorchTrainer across the spec's `num_workers`.

Events and checkpoints come back through shared storage: the data directory is a filesystem that
the API, the workers and every Ray node mount at the same path. The scheduler then tails
JOB_DIR/events.jsonl exactly as it does for a local process, checkpoints are already where serving
and resuming look, and nothing has to be copied after a run (which a crash could interrupt). Ray's
logs are read only to explain a failure that the training program could not report itself (it
never started, it was killed for memory).

Ray's job states map onto OpenAI's statuses (in `poll`, through the scheduler): PENDING is `queued` (the cluster
has no room yet), RUNNING `running`, SUCCEEDED `succeeded` (when the run wrote its result),
FAILED `failed`, STOPPED `cancelled` (stopped by tuneserve, or by someone with `ray job stop`).

A Ray job lives on the cluster, not in the worker that submitted it: when that worker vanishes,
another worker takes over watching the same run (`adopt`) instead of starting it again.
Before its first job (and again after a failed check), the runner asks the cluster whether its
interpreter imports the server's tuneserve (ray_preflight.py): a cluster that cannot run the
training program fails the job at once, saying how to fix it, instead of failing every job in Ray.
Ray is imported only when this runner is used (`pip install 'tuneserve[ray]'`).
"""

from __future__ import annotations

import logging
import os
import shlex
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tuneserve.jobs.runners.ray_preflight import ClusterPython, run_check
from tuneserve.jobs.runners.state import RunState, last_error_line
from tuneserve.training.events import STOP_REQUEST_FILE, EventWriter

log = logging.getLogger("tuneserve.ray")

# Passed to the run's environment: where models are cached and whether the hub may be reached.
# Never secrets (HF_TOKEN, WANDB_API_KEY): Ray shows a job's runtime_env on its dashboard, so
# those belong in the Ray nodes' own environment.
FORWARDED_ENV = ("TUNESERVE_MODEL_CACHE", "HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


@dataclass
class RayHandle:
    """A `RunHandle` (runners/__init__.py): one attempt as a Ray job."""

    job_id: str
    job_dir: Path
    ref: str  # the Ray submission id
    dashboard_url: str

    @property
    def pid(self) -> None:
        return None  # the run's processes are on the cluster's nodes, not here


class RayRunner:
    """A `Runner` (runners/__init__.py) of Ray jobs on an existing cluster."""

    # A Ray job outlives the worker that submitted it: another worker can take over watching it.
    detachable = True
    # A submitted job may wait for the cluster's resources (PENDING): the job stays `queued` until then.
    starts_pending = True
    name = "ray"

    def __init__(self, address: str, *, python: str = "python"):
        from ray.job_submission import JobSubmissionClient

        self.address = address
        self.python = python
        try:
            self.client = JobSubmissionClient(address)
        except Exception as exc:  # ConnectionError, or a version mismatch: say where we looked
            raise ConnectionError(
                f"cannot reach the Ray cluster's Jobs API at {address} ({exc}); pass the head "
                "node's dashboard address, e.g. --ray-address http://HEAD:8265"
            ) from exc
        self.dashboard = self.client.get_address().rstrip("/")
        self._last_error_log = 0.0
        self.cluster: ClusterPython | None = None  # what the preflight found; None until one passes
        self._check_lock = threading.Lock()

    @staticmethod
    def submission_id(job_id: str, attempt: int) -> str:
        """One per attempt (Ray never reuses one), known before submitting: a worker that dies right after
        submitting still lets the next one find and stop that Ray job."""
        return f"{job_id}-attempt-{attempt}"

    def job_url(self, submission_id: str) -> str:
        return f"{self.dashboard}/#/jobs/{submission_id}"

    def start(self, job_id: str, job_dir: Path, attempt: int = 1) -> RayHandle:
        """Submit the attempt; RayClusterNotReady (before submitting anything) if the cluster cannot run it."""
        cluster = self.check_cluster()
        submission_id = self.submission_id(job_id, attempt)
        (job_dir / STOP_REQUEST_FILE).unlink(missing_ok=True)  # a pause's request is for the attempt it paused
        # Into the job's events (the scheduler reads this file from its last offset): which interpreter ran it.
        writer = EventWriter(job_dir / "events.jsonl")
        try:
            writer.message(cluster.describe(self.python))
        finally:
            writer.close()
        self.client.submit_job(
            entrypoint=f"{self.python} -m tuneserve.training.ray_train {shlex.quote(str(job_dir.resolve()))}",
            submission_id=submission_id,
            runtime_env={"env_vars": self._env_vars()},
            metadata={"tuneserve_job_id": job_id, "attempt": str(attempt)},
        )
        return RayHandle(job_id, job_dir, submission_id, self.job_url(submission_id))

    def check_cluster(self) -> ClusterPython:
        """The preflight, once per runner: a passed check holds until the worker restarts (a node set up
        later without tuneserve still fails in Ray, with Ray's message); a failed one runs again next job."""
        with self._check_lock:
            if self.cluster is None:
                cluster = run_check(self.client, self.python, self._env_vars())
                log.info("Ray preflight passed: %s", cluster.describe(self.python))
                self.cluster = cluster
            return self.cluster

    @staticmethod
    def _env_vars() -> dict[str, str]:
        env = {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        return env

    def poll(self, handle: RayHandle) -> RunState:
        try:
            info = self.client.get_job_info(handle.ref)
        except Exception as exc:  # the dashboard is restarting or the network blinked: ask again next tick
            if time.monotonic() - self._last_error_log > 60:
                log.warning("cannot ask Ray about %s: %s", handle.ref, exc)
                self._last_error_log = time.monotonic()
            return RunState("running")
        status = str(getattr(info.status, "value", info.status))
        if status == "PENDING":
            return RunState("pending", detail=info.message)
        if status == "RUNNING":
            return RunState("running", detail=info.message)
        if status == "STOPPED":
            return RunState("stopped", detail=info.message)
        code = info.driver_exit_code if info.driver_exit_code is not None else (0 if status == "SUCCEEDED" else 1)
        return RunState("exited", code if status == "SUCCEEDED" or code != 0 else 1, detail=info.message)

    def stop(self, handle: RayHandle, grace_s: float = 5.0, *, pause: bool = False) -> None:
        """Cancel: stop the Ray job now (Ray sends SIGTERM, then SIGKILL). Pause: ask the run to write a
        checkpoint and end (STOP_REQUEST_FILE), wait up to `grace_s`, then stop the Ray job."""
        if pause:
            (handle.job_dir / STOP_REQUEST_FILE).touch()
            if self._wait_until_done(handle.ref, grace_s):
                return
        try:
            self.client.stop_job(handle.ref)
        except Exception as exc:
            log.warning("stopping Ray job %s failed: %s", handle.ref, exc)
        self._wait_until_done(handle.ref, 30.0)

    def _wait_until_done(self, submission_id: str, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if str(self.client.get_job_status(submission_id).value) in ("SUCCEEDED", "FAILED", "STOPPED"):
                    return True
            except Exception:  # unknown id: nothing runs under it
                return True
            time.sleep(0.5)
        return False

    def failure_detail(self, handle: RayHandle) -> str:
        """Ray's own message and the error line of the job's log (the driver's and the workers' output)."""
        parts = []
        try:
            info = self.client.get_job_info(handle.ref)
            if info.message:
                parts.append(info.message.strip())
            # The client reads the error's line; the whole log stays on the cluster (and its dashboard).
            if error := last_error_line(self.client.get_job_logs(handle.ref)[-8000:], where="the Ray job's log"):
                parts.append(error)
        except Exception as exc:
            parts.append(f"(Ray's logs are unavailable: {exc})")
        parts.append(f"Ray job: {handle.dashboard_url}")
        return "\n".join(parts)

    def adopt(self, job_id: str, job_dir: Path, runner_ref: str | None) -> RayHandle | None:
        """The run of a job whose worker vanished, if it still goes on: watch it instead of starting again."""
        if not runner_ref:
            return None
        try:
            status = str(self.client.get_job_status(runner_ref).value)
        except Exception:
            return None
        if status not in ("PENDING", "RUNNING"):
            return None
        return RayHandle(job_id, job_dir, runner_ref, self.job_url(runner_ref))

    def abandon(
        self, job_id: str, job_dir: Path, runner_pid: int | None, runner_ref: str | None, attempt: int | None = None
    ) -> None:
        """Stop what a vanished worker may have left running, so the job never runs twice: its recorded
        Ray job, or the one it was about to record (the id of its attempt is known in advance)."""
        refs = {r for r in (runner_ref, self.submission_id(job_id, attempt) if attempt else None) if r}
        for ref in refs:
            try:
                if str(self.client.get_job_status(ref).value) in ("PENDING", "RUNNING"):
                    self.client.stop_job(ref)
                    self._wait_until_done(ref, 30.0)
            except Exception:  # no such Ray job: nothing to stop
                continue

    def describe(self, handle: RayHandle) -> str:
        return f"Ray job {handle.ref} ({handle.dashboard_url})"
