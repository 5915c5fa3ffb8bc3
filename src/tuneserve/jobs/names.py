"""Fine-tuned model names: ft:{base}:{org}:{suffix}:{id}, checkpoints add :ckpt-step-{N}."""

from __future__ import annotations

import re

_CKPT = re.compile(r"^(?P<model>ft:.+):ckpt-step-(?P<step>\d+)$")


def fine_tuned_model_name(base: str, project: str, suffix: str | None, job_id: str) -> str:
    return f"ft:{base}:{project}:{suffix or ''}:{job_id.removeprefix('ftjob-')}"


def checkpoint_model_name(model_name: str, step: int) -> str:
    return f"{model_name}:ckpt-step-{step}"


def split_checkpoint_name(name: str) -> tuple[str, int] | None:
    """('ft:...', N) for a checkpoint name, None for anything else."""
    match = _CKPT.match(name)
    return (match["model"], int(match["step"])) if match else None


def job_id_of(model_name: str) -> str | None:
    """The job id at the end of a fine-tuned model name."""
    if not model_name.startswith("ft:"):
        return None
    return "ftjob-" + model_name.rsplit(":", 1)[-1]
