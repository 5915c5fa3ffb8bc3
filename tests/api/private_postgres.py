"""A PostgreSQL cluster of a test's own, on a free loopback port, that the test may stop and start.

The machine's shared PostgreSQL (127.0.0.1:5432) serves other tests and CI: a test that restarts the
database under a server restarts this one instead. initdb refuses to run as root, so every command
runs as the `postgres` OS user, in a directory under /tmp that it owns (pytest's tmp_path is root's alone).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")


@dataclass
class PrivatePostgres:
    root: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _pg_ctl(self, *args: str) -> None:
        command = [str(PG_BIN / "pg_ctl"), "-D", str(self.root / "data"), *args]
        done = subprocess.run(_as_postgres(command), capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"pg_ctl {args[-1]} failed: {done.stdout}{done.stderr}\n{self.log_tail()}"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._pg_ctl("-o", options, "-l", str(self.root / "postgres.log"), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """`fast` ends every session at once (its clients see the connection cut), then shuts down."""
        self._pg_ctl("-m", mode, "-w", "stop")

    def running(self) -> bool:
        status = subprocess.run(
            _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.root / "data"), "status"]), capture_output=True
        )
        return status.returncode == 0

    def log_tail(self) -> str:
        log = self.root / "postgres.log"
        return log.read_text()[-2000:] if log.exists() else ""


def _as_postgres(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@pytest.fixture
def private_postgres():
    """A fresh cluster (trust auth), started; stopped and removed afterwards, whatever the test left."""
    if not (PG_BIN / "initdb").is_file():
        pytest.skip(f"no {PG_BIN}/initdb: PostgreSQL 15's server binaries are not installed")
    root = Path(tempfile.mkdtemp(prefix="tuneserve-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    cluster = PrivatePostgres(root, free_port())
    try:
        init = [str(PG_BIN / "initdb"), "-D", str(root / "data"), "-A", "trust", "-U", "postgres", "--no-sync"]
        done = subprocess.run(_as_postgres(init), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"initdb failed: {done.stdout}{done.stderr}"
        cluster.start()
        yield cluster
    finally:
        if cluster.running():
            cluster.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
