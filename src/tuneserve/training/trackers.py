"""Where metrics go besides the event file: TensorBoard logs in the job directory, and W&B when asked.

Owns: opening, writing and closing those writers. A tracker that cannot start never fails
training: it warns once (as an event) and is left out. The W&B key comes only from the environment
(WANDB_API_KEY); the server refuses a W&B job up front when the package or the key is missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneserve.training.events import EventWriter
from tuneserve.training.spec import TrainingSpec


class Trackers:
    def __init__(self, spec: TrainingSpec, job_dir: Path, events: EventWriter):
        self.events = events
        self.tensorboard = None
        self.wandb_run = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(log_dir=str(job_dir / "tensorboard"))
        except Exception as exc:  # tensorboard missing or the directory unwritable: only the logs are lost
            events.message(f"TensorBoard logging is off: {type(exc).__name__}: {exc}", level="warn")
        if spec.wandb is not None:
            try:
                import wandb

                settings = dict(spec.wandb)
                self.wandb_run = wandb.init(
                    project=settings.get("project"),
                    name=settings.get("name"),
                    entity=settings.get("entity"),
                    tags=settings.get("tags"),
                    config=spec.model_dump(mode="json"),
                    dir=str(job_dir),
                )
                events.message(f"Logging to W&B: {self.wandb_run.url}")
            except Exception as exc:
                events.message(f"W&B logging is off: {type(exc).__name__}: {exc}", level="warn")

    def log(self, metrics: dict[str, Any], step: int) -> None:
        numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and k not in ("step", "total_steps")}
        if self.tensorboard is not None:
            for name, value in numbers.items():
                self.tensorboard.add_scalar(
                    name.replace("_", "/", 1) if name.startswith(("train_", "valid_", "full_valid_")) else name, value, step
                )
            self.tensorboard.flush()
        if self.wandb_run is not None:
            self.wandb_run.log(numbers, step=step)

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()
