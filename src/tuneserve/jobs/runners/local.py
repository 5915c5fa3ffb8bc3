"""The local runner: each job is `python -m tuneserve.training JOB_DIR` on this machine, one process
per GPU when more than one is visible.

With N > 1 processes (one per visible CUDA device, or `procs_per_job`), every rank gets the
environment torchrun gives its workers (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE,
MASTER_ADDR, MASTER_PORT), so the recipe initializes torch.distributed from the environment as it
would under torchrun. The ranks are started here rather than by torchrun because torchrun puts each
worker in a session of its own: a SIGKILLed worker (or torchrun) would leave ranks training on.
Here all ranks share one process group (cancel and pause reach every rank) and die with the
thread that started them (PR_SET_PDEATHSIG), so a killed server or worker never leaves a training
run behind that a restarted one would start a second time.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tuneserve.jobs.runners.state import RunState, last_error_line

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:  # not Linux: the restart check in Scheduler.recover still prevents double runs
        pass


@dataclass
class LocalHandle:
    """A `RunHandle` (runners/__init__.py): the processes of one attempt on this machine."""

    job_id: str
    job_dir: Path
    process: subprocess.Popen  # rank 0; its pid is the process group's id
    others: list[subprocess.Popen] = field(default_factory=list)  # ranks 1..N-1

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def ref(self) -> str:
        return str(self.process.pid)

    @property
    def dashboard_url(self) -> None:
        return None  # a local process has no page of its own


class LocalRunner:
    """A `Runner` (runners/__init__.py) of processes on this machine."""

    # A local run dies with its worker; another worker cannot take it over, only start it again.
    detachable = False
    starts_pending = False
    name = "local"

    def __init__(self, procs_per_job: int | None = None):
        self.procs_per_job = procs_per_job

    def processes_for(self, job_dir: Path) -> int:
        return self.procs_per_job or visible_cuda_devices()

    def start(self, job_id: str, job_dir: Path, attempt: int = 1) -> LocalHandle:
        n = self.processes_for(job_dir)
        base_env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        command = [sys.executable, "-m", "tuneserve.training", str(job_dir)]
        if n <= 1:  # a session of its own: no terminal signal reaches it, and killpg reaches its children
            return LocalHandle(job_id, job_dir, _spawn(command, base_env, job_dir, rank=0, group=None))
        port = free_port()
        processes: list[subprocess.Popen] = []
        try:
            for rank in range(n):
                env = {**base_env, **rank_environment(rank, n, port)}
                # Rank 0 leads a new process group (in this session: a group cannot span sessions); the others join it.
                processes.append(_spawn(command, env, job_dir, rank=rank, group=processes[0].pid if processes else 0))
        except BaseException:
            for process in processes:
                process.kill()
            raise
        return LocalHandle(job_id, job_dir, processes[0], processes[1:])

    def poll(self, handle: LocalHandle) -> RunState:
        """Running until every rank has exited; the first failing rank's code wins (a rank that
        failed makes the others hang in their next collective, so they are stopped at once)."""
        codes = [p.poll() for p in (handle.process, *handle.others)]
        failed = [c for c in codes if c not in (None, 0)]
        if failed and None in codes:
            stop_process_group(handle.pid, grace_s=5.0)
            codes = [p.wait() for p in (handle.process, *handle.others)]
        if None in codes:
            return RunState("running")
        return RunState("exited", next((c for c in codes if c != 0), 0))

    def stop(self, handle: LocalHandle, grace_s: float = 5.0, *, pause: bool = False) -> None:
        """SIGTERM the process group, then SIGKILL what is left after `grace_s`. (SIGTERM is also how a
        pause asks the run for its checkpoint, so `pause` changes nothing here.)"""
        stop_process_group(handle.pid, grace_s)
        for process in (handle.process, *handle.others):
            process.wait(timeout=grace_s + 5)

    def failure_detail(self, handle: LocalHandle) -> str:
        stderr = handle.job_dir / "stderr.log"
        return last_error_line(stderr.read_bytes()[-8000:].decode("utf-8", "replace")) if stderr.exists() else ""

    def adopt(self, job_id: str, job_dir: Path, runner_ref: str | None) -> None:
        """A local run cannot be taken over: it died with its worker (or is killed in `abandon`)."""
        return None

    def abandon(
        self, job_id: str, job_dir: Path, runner_pid: int | None, runner_ref: str | None, attempt: int | None = None
    ) -> None:
        """Make sure a run left by a vanished worker of this host is gone, so it never runs twice."""
        if runner_pid and is_training_process(runner_pid, job_dir):
            stop_process_group(runner_pid)

    def describe(self, handle: LocalHandle) -> str:
        n = 1 + len(handle.others)
        return "the training process" if n == 1 else f"{n} training processes (one per GPU)"


def _spawn(command: list[str], env: dict[str, str], job_dir: Path, *, rank: int, group: int | None) -> subprocess.Popen:
    suffix = "" if rank == 0 else f"-rank{rank}"
    with (job_dir / f"stdout{suffix}.log").open("ab") as out, (job_dir / f"stderr{suffix}.log").open("ab") as err:
        return subprocess.Popen(
            command,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=job_dir,
            # One process group for all ranks, so one killpg reaches them all.
            start_new_session=group is None,
            process_group=group,
            preexec_fn=_die_with_parent,
        )


def visible_cuda_devices() -> int:
    """How many CUDA devices this process may use (1 when none: one CPU process). Counted without
    creating a CUDA context (NVML), and honouring CUDA_VISIBLE_DEVICES."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return 1
    try:
        import torch

        return max(1, torch.cuda.device_count())
    except Exception:  # no torch or no driver: one process, which finds its device itself
        return 1


def rank_environment(rank: int, world: int, port: int) -> dict[str, str]:
    """What torchrun gives rank `rank` of `world` processes on this host (training.distributed reads it)."""
    return {
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "WORLD_SIZE": str(world),
        "LOCAL_WORLD_SIZE": str(world),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    # Zombies still count for killpg: the group is alive while one member is not a zombie.
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[2] == str(pgid) and fields[0] != "Z":  # state, ppid, pgrp
            return True
    return False


def is_training_process(pid: int, job_dir: Path) -> bool:
    """True if `pid` is a live training process of this job (checked after a server restart)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"tuneserve.training" in cmdline and str(job_dir).encode() in cmdline
