"""`tuneserve worker`: runs jobs from a shared store, without serving the API.

Start one on each GPU host (and `tuneserve serve --api-only` for the API replicas), all with the
same `--database-url` (PostgreSQL) and the same data directory on shared storage. Each worker
claims queued jobs under a lease, heart-beats them, and takes back the jobs of a worker that
vanished (see jobs/leases.py). SIGTERM or Ctrl-C stops it cleanly: its local runs stop and their
jobs go back to the queue (they resume from their last checkpoint); Ray runs go on, and the next
worker takes over watching them.

Owns: choosing the runner from the settings, the worker's process life (signals, the loop in
the main thread). Does not own scheduling (scheduler.py) or leases (leases.py).
"""

from __future__ import annotations

import logging
import signal
import sys

from tuneserve.jobs.runners import Runner
from tuneserve.settings import Settings

log = logging.getLogger("tuneserve.worker")


def runner_from(settings: Settings) -> Runner:
    """The runner the settings ask for: Ray jobs on a cluster, or processes on this machine."""
    if settings.runner == "ray":
        from tuneserve.jobs.runners.ray import RayRunner

        return RayRunner(settings.ray_address, python=settings.ray_python)
    from tuneserve.jobs.runners.local import LocalRunner

    return LocalRunner(settings.procs_per_job)


def run_worker(settings: Settings) -> int:
    from tuneserve.data import validate_file
    from tuneserve.jobs.scheduler import Scheduler
    from tuneserve.store.blobs import BlobStore
    from tuneserve.store.db import make_engine, make_sessionmaker, migrate
    from tuneserve.store.files import FileService

    try:
        runner = runner_from(settings)
    except (ConnectionError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    jobs_dir = settings.data_dir / "jobs"
    jobs_dir.mkdir(exist_ok=True)
    engine = make_engine(settings.db_url)
    migrate(engine)
    sessions = make_sessionmaker(engine)
    files = FileService(sessions, BlobStore(settings.data_dir / "files"), settings.max_upload_bytes, check=validate_file)
    scheduler = Scheduler(
        sessions,
        files,
        jobs_dir,
        max_concurrent=settings.max_concurrent_jobs,
        poll_interval_s=settings.poll_interval_s,
        runner=runner,
        role="Worker",
        heartbeat_interval_s=settings.heartbeat_every_s,
        heartbeat_timeout_s=settings.heartbeat_timeout_s,
    )

    def request_stop(signum, _frame) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        scheduler.request_stop()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    print(
        f"tuneserve worker {scheduler.worker_id}: {runner.name} runner, up to {settings.max_concurrent_jobs} job(s) "
        f"at a time; data: {settings.data_dir.resolve()}",
        file=sys.stderr,
        flush=True,
    )
    try:
        scheduler.recover()
        # In the main thread: the training processes die with the thread that started them (PDEATHSIG).
        scheduler.run()
    finally:
        scheduler.stop()
        engine.dispose()
    return 0
