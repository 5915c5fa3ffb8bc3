"""The training program of a Ray job: `python -m tuneserve.training.ray_train JOB_DIR`.

The Ray runner submits this as the job's entrypoint. It runs on the cluster (the head node, where
Ray starts entrypoints) and trains with Ray Train's TorchTrainer: `num_workers` training workers,
each with `resources_per_worker` (the spec's OPEA names; {"GPU": 1} trains on GPUs over NCCL,
otherwise on CPUs over gloo). Ray Train joins the workers into one torch.distributed group; each
worker then calls `tuneserve.training.run.train(spec, job_dir)`, the same entry as a local run,
which wraps the model for data parallelism (DDP, or FSDP for full fine-tuning), shards the data by rank, and lets only rank 0 write
events and checkpoints into JOB_DIR (shared storage that the API reads).

Owns: the TorchTrainer set-up, the stop request (a pause touches JOB_DIR/stop-requested; every
worker checks it between steps, the loop agrees on it across ranks, checkpoints and returns), and
the exit code: 0 when the run ended, 1 with one error event when it failed.
Does not own training (run.py, recipes) or the job's bookkeeping (tuneserve.jobs).
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from tuneserve.training.events import STOP_REQUEST_FILE, EventWriter, Message, read_events

USAGE = "usage: python -m tuneserve.training.ray_train JOB_DIR"


def main(argv: list[str] | None = None) -> int:
    from tuneserve.training.run import job_dir_from_argv

    job_dir = job_dir_from_argv(argv, USAGE)
    if job_dir is None:
        return 2
    _, start_offset = read_events(job_dir / "events.jsonl")
    try:
        from ray.train import FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchConfig, TorchTrainer

        from tuneserve.training.spec import TrainingSpec

        spec = TrainingSpec.read(job_dir)
        resources = {k: float(v) for k, v in spec.resources_per_worker.items()}
        use_gpu = resources.get("GPU", 0) > 0
        print(
            f"tuneserve: training {job_dir.name} on {spec.num_workers} Ray Train worker(s), "
            f"{resources or 'default resources'} each, backend {'nccl' if use_gpu else 'gloo'}",
            flush=True,
        )
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config={"job_dir": str(job_dir)},
            torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
            scaling_config=ScalingConfig(num_workers=spec.num_workers, use_gpu=use_gpu, resources_per_worker=resources or None),
            # Ray Train's own run state goes beside the job's files, on the storage every node shares;
            # a failed worker fails the attempt (tuneserve re-queues jobs itself, from checkpoints).
            run_config=RunConfig(
                name=job_dir.name, storage_path=str((job_dir / "ray").resolve()), failure_config=FailureConfig(max_failures=0)
            ),
        )
        trainer.fit()
    except Exception as exc:
        traceback.print_exc()
        # A worker that raised has reported its error already; otherwise (it was killed, or Ray could not
        # place it) Ray's own words are the best explanation.
        if not _error_reported_since(job_dir, start_offset):
            _report(job_dir, f"{type(exc).__name__}: {exc}")
        return 1
    return 0


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: the same `train` as a local run, with a stop request read from the shared directory."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import ray.train

    from tuneserve.training.run import train
    from tuneserve.training.spec import TrainingSpec

    job_dir = Path(config["job_dir"])
    try:
        train(TrainingSpec.read(job_dir), job_dir, stop_requested=_StopFile(job_dir / STOP_REQUEST_FILE))
    except Exception as exc:
        if ray.train.get_context().get_world_rank() == 0:
            traceback.print_exc()
            _report(job_dir, f"{type(exc).__name__}: {exc}")
        raise


class _StopFile:
    """True once the stop-request file exists (looked at most once a second: it may be on NFS)."""

    def __init__(self, path: Path):
        self.path = path
        self._checked, self._seen = 0.0, False

    def __call__(self) -> bool:
        if not self._seen and time.monotonic() - self._checked >= 1.0:
            self._checked = time.monotonic()
            self._seen = self.path.exists()
        return self._seen


def _error_reported_since(job_dir: Path, offset: int) -> bool:
    events, _ = read_events(job_dir / "events.jsonl", offset)
    return any(isinstance(e, Message) and e.level == "error" for e in events)


def _report(job_dir: Path, message: str) -> None:
    try:
        events = EventWriter(job_dir / "events.jsonl")
        events.message(message[-4000:], level="error")
        events.close()
    except OSError:
        traceback.print_exc()


if __name__ == "__main__":
    sys.exit(main())
