"""The Ray runner's preflight: before its first job, ask the cluster whether the interpreter that will run
the jobs (`--ray-python`, "python" by default: whatever is first on the PATH of the process that ran
`ray start`) imports tuneserve, and which version.

Without it, a cluster started with the venv's `ray` but without the venv's bin on PATH (a new user's
`.venv/bin/ray start --head`) fails every job with `No module named 'tuneserve'`, deep in Ray's logs,
after the job was queued and submitted; and a cluster with another tuneserve than the server's runs
a training program that may not read the server's spec. The check is one tiny Ray job through the same
Jobs API, so it sees exactly what the real jobs will see.

Owns: the check job, reading its answer, the words of its failure. Does not own when it runs (ray.py).
"""

from __future__ import annotations

import json
import re
import shlex
import time
import uuid
from dataclasses import dataclass

import tuneserve

TIMEOUT_S = 120.0
# The one line the check prints, found by this prefix among whatever else Ray writes to the job's log.
MARKER = "TUNESERVE_PREFLIGHT "
CODE = (
    f"import json, sys, tuneserve; print({MARKER!r} + json.dumps({{'python': sys.executable, 'version': tuneserve.__version__}}))"
)


class RayClusterNotReady(RuntimeError):
    """The cluster cannot run this server's training program: the message says why and what to do."""


@dataclass(frozen=True)
class ClusterPython:
    """What the check found: the interpreter the cluster runs jobs with, and its tuneserve."""

    executable: str
    version: str

    def describe(self, python: str) -> str:
        return f"The Ray cluster runs {python!r} as {self.executable}, with tuneserve {self.version}"


def fixes(python: str) -> str:
    """The ways out, for every failure: the user chooses the one that fits how they run Ray."""
    return (
        f"Fix one of: install tuneserve {tuneserve.__version__} (pip install 'tuneserve[ray]=={tuneserve.__version__}') "
        f"for the {python!r} of every Ray node; or start Ray from the activated virtual environment "
        "(`source .venv/bin/activate && ray start --head`), or with its bin first on PATH "
        "(`PATH=$PWD/.venv/bin:$PATH ray start --head`); or name the interpreter that has tuneserve with "
        "--ray-python / TUNESERVE_RAY_PYTHON (e.g. /opt/tuneserve/.venv/bin/python, the same path on every node); "
        "or run the nodes from an image (or a Ray runtime_env) that has this tuneserve installed."
    )


def run_check(client, python: str, env_vars: dict[str, str], timeout_s: float = TIMEOUT_S) -> ClusterPython:
    """Submit the check job, wait for it, and judge its answer; RayClusterNotReady if the cluster cannot run jobs."""
    submission_id = f"tuneserve-preflight-{uuid.uuid4().hex[:12]}"
    try:
        client.submit_job(
            entrypoint=f"{python} -c {shlex.quote(CODE)}",
            submission_id=submission_id,
            runtime_env={"env_vars": env_vars},
            metadata={"tuneserve_preflight": "1"},
        )
    except Exception as exc:
        raise RayClusterNotReady(f"could not submit the Ray cluster check job: {type(exc).__name__}: {exc}") from exc
    status = _wait(client, submission_id, timeout_s)
    try:
        logs = client.get_job_logs(submission_id) or ""
    except Exception as exc:  # the dashboard blinked: judge on the status alone
        logs = f"(Ray's logs are unavailable: {exc})"
    return judge(python, status, logs)


def _wait(client, submission_id: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    status = "PENDING"
    while time.monotonic() < deadline:
        try:
            status = str(client.get_job_status(submission_id).value)
        except Exception:  # a blink of the dashboard: ask again
            pass
        if status in ("SUCCEEDED", "FAILED", "STOPPED"):
            return status
        time.sleep(0.5)
    try:  # never leave it waiting on the cluster
        client.stop_job(submission_id)
    except Exception:
        pass
    return f"still {status} after {timeout_s:.0f} s"


# Ray's own lines in a job's log ("2026-01-01 10:00:00,123\tINFO job_manager.py:581 -- ..."), and its echo of the entrypoint.
_RAY_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\s+[A-Z]+ |Running entrypoint for job )")


def _last_error(logs: str) -> str:
    """The line that says what went wrong ("ModuleNotFoundError: No module named 'tuneserve'", "sh: 1: x: not
    found"), not Ray's chatter or the traceback's frames."""
    lines = [line.strip() for line in logs.splitlines() if line.strip() and not _RAY_LINE.match(line)]
    lines = [line for line in lines if not line.startswith(("Traceback ", "File ", "^"))]
    return lines[-1][-400:] if lines else ""


def judge(python: str, status: str, logs: str) -> ClusterPython:
    """The check job's end and log, as what the cluster runs; RayClusterNotReady when jobs could not run there."""
    # At the start of a line: Ray's log also echoes the entrypoint, whose code holds the marker too.
    answer = next((line[len(MARKER) :] for line in reversed(logs.splitlines()) if line.startswith(MARKER)), None)
    if status != "SUCCEEDED" or answer is None:
        why = _last_error(logs)
        raise RayClusterNotReady(
            f"the Ray cluster cannot run tuneserve: its {python!r} failed to import it "
            f"({why + '; ' if why else ''}the check job: {status}). Ray runs tuneserve's jobs with {python!r} "
            "(looked up on the PATH that `ray start` had, on each node), which must have tuneserve installed. " + fixes(python)
        )
    try:
        found = json.loads(answer)
        cluster = ClusterPython(str(found["python"]), str(found["version"]))
    except (ValueError, TypeError, KeyError) as exc:  # a line cut short: say so rather than guess
        raise RayClusterNotReady(f"the Ray cluster check job answered {answer[:200]!r}, which is not its report ({exc})") from exc
    if cluster.version != tuneserve.__version__:
        raise RayClusterNotReady(
            f"the Ray cluster's {python!r} ({cluster.executable}) has tuneserve {cluster.version}, but this server "
            f"is tuneserve {tuneserve.__version__}: the training program must be the server's own version. " + fixes(python)
        )
    return cluster
