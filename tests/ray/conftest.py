"""A real local Ray cluster for the Ray runner's tests: `ray start --head` on 127.0.0.1 with 2 CPUs and
its dashboard (the Jobs API), once per session, in a temporary directory.

The cluster runs in the foreground (`--block`) in a session of its own; teardown ends exactly the
processes it started (the `ray start` process and its descendants), never other Ray processes.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import free_port


@pytest.fixture(scope="session")
def ray_cluster():
    """The dashboard address (http://127.0.0.1:PORT) of a fresh 2-CPU Ray head."""
    pytest.importorskip("ray.job_submission", reason="the Ray runner's tests need `pip install 'tuneserve[ray]'`")
    from ray.job_submission import JobSubmissionClient

    # Short: Ray's unix sockets live under the temp dir, and a socket path must stay under 108 bytes.
    temp_dir = Path(tempfile.mkdtemp(prefix="ts-ray-", dir="/tmp"))
    dashboard_port = free_port()
    bin_dir = Path(sys.executable).parent
    # The cluster runs job entrypoints with `python` from its PATH: this virtual environment's.
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "RAY_USAGE_STATS_ENABLED": "0"}
    log = (temp_dir / "ray-start.log").open("ab")
    head = subprocess.Popen(
        [
            str(bin_dir / "ray"),
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={free_port()}",
            "--num-cpus=2",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard_port}",
            "--include-dashboard=true",
            f"--ray-client-server-port={free_port()}",
            f"--temp-dir={temp_dir}",
            "--disable-usage-stats",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    address = f"http://127.0.0.1:{dashboard_port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if head.poll() is not None:
                raise RuntimeError(
                    f"ray start exited with {head.returncode}:\n{(temp_dir / 'ray-start.log').read_text()[-3000:]}"
                )
            try:
                JobSubmissionClient(address).list_jobs()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        yield address
    finally:
        _stop_tree(head)
        shutil.rmtree(temp_dir, ignore_errors=True)  # Ray's session logs


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _stop_tree(head: subprocess.Popen) -> None:
    """SIGTERM `ray start` and every process it started (Ray's workers leave its process group), then
    SIGKILL what is left after a grace period, as `ray stop` does, but only for this cluster."""
    pids = [head.pid, *_descendants(head.pid)]
    for sig, wait_s in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() and _alive(pid) for pid in pids):
            head.poll()
            time.sleep(0.2)
    head.wait(timeout=10)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] != "Z"
    except OSError:
        return False
