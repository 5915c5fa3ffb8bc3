"""One training run from a TrainingSpec: opens the event stream, announces the job, picks the recipe.

Owns: `train(spec, job_dir)`, the entry every caller uses (the `python -m tuneserve.training`
process, the CLI, tests). Does not own: how a method trains (training/recipes/), the process
exit codes (training/__main__.py), or job bookkeeping on the server side (tuneserve.jobs).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from rich.console import Console

from tuneserve.training.events import EventWriter, NullEventWriter
from tuneserve.training.spec import TrainingSpec


def train(
    spec: TrainingSpec, job_dir: Path, *, progress: bool = False, stop_requested: Callable[[], bool] = lambda: False
) -> dict[str, Any]:
    """Run the whole job in `job_dir` and return the result event (also written to events.jsonl).

    `progress=True` draws a progress bar and echoes messages on stderr, for a person at a
    terminal; the server leaves it off and reads events.jsonl instead. When `stop_requested()`
    turns true, the run checkpoints at the next step boundary and returns {"type": "stopped"}.
    Under torchrun or Ray Train every process calls this; only rank 0 writes events and files.
    """
    from tuneserve.training import distributed

    distributed.setup()
    job_dir = Path(job_dir)
    console = Console(stderr=True) if progress and distributed.is_main() else None
    events = (
        EventWriter(job_dir / "events.jsonl", echo=_echo_messages(console) if console else None)
        if distributed.is_main()
        else NullEventWriter()
    )
    try:
        events.message("Fine-tuning job started")
        # Print the resolved spec (every "auto" already made concrete), so a run explains itself.
        events.message("Resolved spec:\n" + _as_shown(spec))
        recipe = _recipe(spec)
        result = recipe(spec, job_dir, events, console=console, stop_requested=stop_requested)
        if result.get("type") == "result":
            events.message("Fine-tuning job finished")
        return result
    finally:
        events.close()


def job_dir_from_argv(argv: list[str] | None, usage: str) -> Path | None:
    """JOB_DIR, the one argument of a training program (`python -m tuneserve.training[.ray_train]`);
    None after printing `usage` when the arguments are not exactly that."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] in ("-h", "--help"):
        print(usage, file=sys.stderr)
        return None
    return Path(args[0])


def _as_shown(spec: TrainingSpec) -> str:
    """The spec as the job's events show it to API clients: its files by their last part (an uploaded file's is its
    id; a checkpoint's, its step), never the server's paths."""
    shown = spec.model_dump(mode="json")
    for field in ("training_file", "validation_file", "init_adapter"):
        if shown[field]:
            shown[field] = Path(shown[field]).name
    return json.dumps(shown, indent=2)


def _recipe(spec: TrainingSpec) -> Callable[..., dict[str, Any]]:
    """The recipe module for the method (each handles every training type); imported late so
    `run` stays cheap to import."""
    if spec.method == "supervised":
        from tuneserve.training.recipes import sft

        return sft.run
    if spec.method == "dpo":
        from tuneserve.training.recipes import dpo

        return dpo.run
    raise ValueError(f"no recipe for method={spec.method!r}")


def _echo_messages(console: Console) -> Callable[[dict[str, Any]], None]:
    """Show message events on the terminal; metrics go to the progress bar instead."""

    def echo(event: dict[str, Any]) -> None:
        if event["type"] == "message":
            style = {"error": "red", "warn": "yellow"}.get(event.get("level", "info"))
            console.print(event["message"], style=style, markup=False, highlight=False)
        elif event["type"] == "result":
            console.print(f"result: {event}", markup=False, highlight=False)

    return echo
