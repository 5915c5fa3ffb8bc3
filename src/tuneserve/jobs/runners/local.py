"""The local runner: each job is an OS process `python -m tuneserve.training JOB_DIR`.

The process gets its own process group (so cancel stops it and any children) and dies with
the server (PR_SET_PDEATHSIG), so a killed server never leaves a training run behind that a
restarted server would start a second time.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:  # not Linux: the restart check in Scheduler.recover still prevents double runs
        pass


@dataclass
class RunHandle:
    job_id: str
    job_dir: Path
    process: subprocess.Popen

    @property
    def pid(self) -> int:
        return self.process.pid


class LocalRunner:
    def start(self, job_id: str, job_dir: Path) -> RunHandle:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with (job_dir / "stdout.log").open("ab") as out, (job_dir / "stderr.log").open("ab") as err:
            process = subprocess.Popen(
                [sys.executable, "-m", "tuneserve.training", str(job_dir)],
                stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env, cwd=job_dir,
                start_new_session=True, preexec_fn=_die_with_parent,
            )
        return RunHandle(job_id, job_dir, process)

    def poll(self, handle: RunHandle) -> int | None:
        return handle.process.poll()

    def stop(self, handle: RunHandle, grace_s: float = 5.0) -> None:
        """SIGTERM the process group, then SIGKILL what is left after `grace_s`."""
        stop_process_group(handle.pid, grace_s)
        handle.process.wait(timeout=grace_s + 5)


def stop_process_group(pid: int, grace_s: float = 5.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if not _group_alive(pid):
                return
            time.sleep(0.05)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie leader still counts for killpg; treat a reaped-or-zombie leader as gone.
    try:
        with open(f"/proc/{pgid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def is_training_process(pid: int, job_dir: Path) -> bool:
    """True if `pid` is a live training process of this job (checked after a server restart)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"tuneserve.training" in cmdline and str(job_dir).encode() in cmdline
