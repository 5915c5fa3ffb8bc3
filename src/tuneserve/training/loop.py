"""The training loop every recipe shares: steps, schedule, checkpoints, evaluation, pause, resume.

    plan the epoch's batches -> per step: micro-batches -> loss -> backward -> clip -> optimizer
    -> metrics event -> validation every n_evals -> checkpoint every n_checkpoints -> stop if asked

Owns: the optimizer (AdamW) and learning-rate schedule, gradient accumulation, the metrics events
and trackers, checkpoints with everything needed to resume
(weights, optimizer, schedule, RNG, position in the epoch), and a graceful stop (pause).
Does not own what a loss is or how examples become tensors (a recipe gives a `Task`), nor how the
model is spread over processes (training.parallel: DDP, or FSDP for full fine-tuning).

Choices, and why:
- The loss of a step is the sum over the whole step (all micro-batches, all processes) divided
  by the step's units (trained tokens for SFT, pairs for DPO), known before the first backward.
  So accumulation and data parallelism give the same update as one big batch.
- An epoch's batches depend only on (seed, epoch); a checkpoint records how many of them are
  done. A resumed run skips those and continues with the saved RNG, so it takes exactly the
  steps an uninterrupted run takes (tests/unit/training/test_pause_resume.py).
- A stop request (SIGTERM: pause, cancel, server shutdown) is honoured at the next step
  boundary with a checkpoint, so no finished step is lost.
- Checkpoints and validations are spread evenly over the run: `n_checkpoints` and `n_evals`
  (both default to one per epoch, at epoch ends).
- With validation data and `early_stopping_patience`, every validation is also a checkpoint; the
  run stops when the patience is spent, and the result is the checkpoint with the lowest
  validation loss (training.early_stopping), not the last one.
"""

from __future__ import annotations

import contextlib
import math
import random
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from tuneserve.atomic import write_dir_atomically
from tuneserve.training import distributed, model as model_io, parallel
from tuneserve.training.batching import epoch_plan, micro_batches
from tuneserve.training.early_stopping import Keeper
from tuneserve.training.events import Checkpoint, EventWriter, Metrics, Result
from tuneserve.training.spec import TrainingSpec
from tuneserve.training.trackers import Trackers

STATE_FILE = "trainer_state.pt"
# In "mixed" batching (CPU's auto), a step whose examples are all this short still runs as one padded,
# length-grouped batch: their attention matrices are small, and one forward pass of 4 x 110 tokens
# beat four of 110 (the identity demo: 3.2 s/step against 4.1 s/step on SmolLM2).
ROWS_MIN_TOKENS = 256
# Validation during training scores at most this many examples (a cheap signal); the whole
# validation set is scored once at the end.
PERIODIC_VALID_EXAMPLES = 64


class Task(Protocol):
    """What a recipe tells the loop about its examples and its loss."""

    def lengths(self, items: Sequence[Any]) -> list[int]: ...

    def units(self, items: Sequence[Any]) -> int: ...

    def loss(self, forward: Callable[..., Any], items: Sequence[Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
        """(summed loss over the items, summed metrics, real tokens processed), computed through
        `forward(head, **model_inputs)` (training.model.Loaded.apply_head's contract)."""
        ...

    def evaluate(self, forward: Callable[..., Any], items: Sequence[Any], prefix: str) -> dict[str, float]: ...

    def metric_names(self) -> dict[str, str]:
        """Summed metric -> the name its per-unit mean is reported under."""
        ...


@dataclass
class LoopState:
    """Where training stands; saved in every checkpoint."""

    global_step: int = 0
    epoch: int = 1  # the epoch in progress (1-based)
    step_in_epoch: int = 0  # how many of its batches are done
    total_steps: int = 0
    trained_tokens: int = 0
    train_runtime_s: float = 0.0
    last_epoch_loss: float | None = None  # the mean over the last finished epoch: the result's train_loss
    epoch_loss_sum: float = 0.0
    epoch_metric_sums: dict[str, float] = field(default_factory=dict)
    epoch_units: int = 0
    best: dict[str, Any] = field(default_factory=dict)  # early_stopping.Best, for a resumed run to keep judging


class _Trunk(torch.nn.Module):
    """The model as one module whose forward is `Loaded.apply_head`: what DDP and FSDP wrap (every
    parameter, the LM head included, is registered here, so all of their gradients sync)."""

    def __init__(self, loaded: model_io.Loaded):
        super().__init__()
        self.model = loaded.model
        self._apply_head = loaded.apply_head

    def forward(self, head: Callable[[torch.Tensor, torch.nn.Module], Any], **inputs: torch.Tensor) -> Any:
        return self._apply_head(head, **inputs)


def train_loop(
    spec: TrainingSpec,
    job_dir: Path,
    events: EventWriter,
    loaded: model_io.Loaded,
    tokenizer: Any,
    task: Task,
    train_items: Sequence[Any],
    valid_items: Sequence[Any],
    *,
    model_path: Path,
    console: Console | None = None,
    stop_requested: Callable[[], bool] = lambda: False,
) -> dict[str, Any]:
    """Train to the end (or until a stop is requested) and return the result (or `{"type": "stopped"}`)."""
    hp, opt = spec.hyperparameters, spec.optimization
    main = distributed.is_main()
    lengths = task.lengths(train_items)
    steps_per_epoch = math.ceil(len(train_items) / hp.batch_size)
    total_steps = steps_per_epoch * hp.n_epochs
    warmup_steps = max(1, math.ceil(opt.warmup_ratio * total_steps)) if opt.warmup_ratio > 0 else 0
    checkpoint_steps = _spread(total_steps, spec.n_checkpoints or hp.n_epochs)
    eval_steps = _spread(total_steps, hp.n_epochs if spec.n_evals is None else spec.n_evals) if valid_items else set()
    keeper = Keeper(spec.early_stopping_patience if eval_steps else 0, metric=spec.early_stopping_metric)
    if keeper.active:  # the best validation's weights must be on disk to become the result
        checkpoint_steps |= eval_steps

    # A checkpoint's whole weights load before the model is wrapped (FSDP then keeps each rank's shard).
    resume_from = latest_checkpoint(job_dir)
    saved = _load_checkpoint(resume_from, loaded, total_steps) if resume_from is not None else None
    kind = parallel.strategy(spec.training_type)
    trunk = _Trunk(loaded)
    forward = parallel.wrap(trunk, loaded.decoder().layers, loaded.device, kind, compute_dtype=loaded.autocast_dtype)
    # Under FSDP every rank runs every forward, evaluations included; DDP's ranks evaluate unwrapped.
    evaluator = forward if kind == parallel.FSDP else trunk

    trainable = loaded.trainable()  # after wrapping: FSDP has replaced the parameters by their shards
    decay = [p for p in trainable if p.ndim >= 2]  # no weight decay on biases and norms
    rest = [p for p in trainable if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": opt.weight_decay}, {"params": rest, "weight_decay": 0.0}],
        lr=hp.learning_rate,
        fused=loaded.device.type == "cuda",
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_factor(opt.lr_scheduler_type, warmup_steps, total_steps, opt.min_lr_ratio)
    )
    if main:
        processes = f"{distributed.world_size()} process(es)" + (f" ({kind.upper()})" if kind != parallel.SINGLE else "")
        events.message(
            f"Training on {len(train_items)} examples ({len(valid_items)} validation): {hp.n_epochs} epochs x {steps_per_epoch} "
            f"steps of batch {hp.batch_size} = {total_steps} steps, warm-up {warmup_steps}, {opt.lr_scheduler_type} schedule, "
            f"peak learning rate {hp.learning_rate:g}, {model_io.BATCHING_NAMES[loaded.batching]}"
            f", {processes}, device {loaded.device.type}"
        )

    state = LoopState(total_steps=total_steps)
    if saved is not None:
        state = _restore(saved, forward, optimizer, scheduler, kind)
        keeper = Keeper(keeper.patience, state.best or None, metric=spec.early_stopping_metric)
        if main:
            events.message(f"Resumed from checkpoint {resume_from.name} (step {state.global_step} of {total_steps})")

    trackers = Trackers(spec, job_dir, events) if main else None
    run_tokens, run_step_time = 0, 0.0  # this process's steps only: the measured throughput
    stopped = early_stop = False
    try:
        with _progress_bar(console if main else None, total_steps, state.global_step) as advance:
            while state.epoch <= hp.n_epochs and not (stopped or early_stop):
                plan = epoch_plan(lengths, hp.batch_size, spec.seed, state.epoch)
                loop_start = time.perf_counter()
                for indices in plan[state.step_in_epoch :]:
                    step_start = time.perf_counter()
                    step_items = [train_items[i] for i in indices]
                    learning_rate = scheduler.get_last_lr()[0]  # the rate this step uses
                    alone = loaded.batching == "rows" or (
                        loaded.batching == "mixed" and max(lengths[i] for i in indices) > ROWS_MIN_TOKENS
                    )
                    split = len(step_items) if alone else opt.gradient_accumulation_steps
                    units = task.units(step_items)
                    loss_sum, metric_sums, n_tokens = _step(
                        forward, kind, task, step_items, units, trainable, optimizer, opt, split
                    )
                    scheduler.step()
                    state.global_step += 1
                    state.step_in_epoch += 1
                    totals = distributed.all_sum(torch.tensor([loss_sum, n_tokens, *metric_sums.values()], dtype=torch.float64))
                    step_loss = float(totals[0]) / max(units, 1)
                    step_metrics = {task.metric_names()[k]: float(v) / max(units, 1) for k, v in zip(metric_sums, totals[2:])}
                    step_tokens = int(totals[1])
                    state.trained_tokens += step_tokens
                    state.epoch_loss_sum += float(totals[0])
                    state.epoch_units += units
                    for k, v in zip(metric_sums, totals[2:]):
                        state.epoch_metric_sums[k] = state.epoch_metric_sums.get(k, 0.0) + float(v)
                    step_time = time.perf_counter() - step_start
                    run_tokens, run_step_time = run_tokens + step_tokens, run_step_time + step_time
                    advance(step_loss)
                    if main and state.global_step % spec.logging_steps == 0:
                        metrics = {
                            "step": state.global_step,
                            "total_steps": total_steps,
                            "epoch": state.epoch,
                            "train_loss": step_loss,
                            **step_metrics,
                            "learning_rate": learning_rate,
                            "tokens_per_second": step_tokens / max(step_time, 1e-9),
                        }
                        events.emit(Metrics(**metrics))
                        trackers.log(metrics, state.global_step)

                    end_of_epoch = state.step_in_epoch == len(plan)
                    checkpoint_metrics = {
                        "step": state.global_step,
                        "train_loss": state.epoch_loss_sum / max(state.epoch_units, 1),
                        **{task.metric_names()[k]: v / max(state.epoch_units, 1) for k, v in state.epoch_metric_sums.items()},
                    }
                    if state.global_step in eval_steps:
                        valid = task.evaluate(evaluator, valid_items[:PERIODIC_VALID_EXAMPLES], "valid")
                        if spec.early_stopping_metric == "answers":  # judged by behaviour: generate the answers
                            valid.update(task.answer_score(evaluator, valid_items[:PERIODIC_VALID_EXAMPLES], "valid"))
                        if main:
                            events.emit(Metrics(step=state.global_step, total_steps=total_steps, epoch=state.epoch, **valid))
                            trackers.log(valid, state.global_step)
                        checkpoint_metrics.update(valid)
                        if keeper.active:
                            early_stop = keeper.update(valid[keeper.key], state.global_step, state.epoch) == "stop"
                            state.best = asdict(keeper.best)
                    stop = distributed.any_true(stop_requested(), loaded.device)
                    if end_of_epoch:
                        state.last_epoch_loss = checkpoint_metrics["train_loss"]
                        state.epoch, state.step_in_epoch = state.epoch + 1, 0
                        state.epoch_loss_sum, state.epoch_units, state.epoch_metric_sums = 0.0, 0, {}
                    if state.global_step in checkpoint_steps or stop:
                        state.train_runtime_s += time.perf_counter() - loop_start
                        loop_start = time.perf_counter()
                        path = save_checkpoint(job_dir, loaded, tokenizer, state, forward, optimizer, scheduler, kind)
                        if main:
                            events.emit(
                                Checkpoint(
                                    step=state.global_step,
                                    epoch=state.epoch - (1 if end_of_epoch else 0),
                                    path=path.relative_to(job_dir).as_posix(),
                                    metrics=checkpoint_metrics,
                                )
                            )
                        distributed.barrier()
                    if stop:
                        stopped = True
                        break
                    if early_stop:
                        if main:
                            events.message(
                                f"Stopping early at step {state.global_step} of {total_steps}: {keeper.best.evals_since} "
                                f"validation(s) in a row without a better {keeper.label} than {keeper.best.loss:.4f} (epoch "
                                f"{keeper.best.epoch}, step {keeper.best.step}); patience {keeper.patience}"
                            )
                        break
                if not stopped:
                    state.train_runtime_s += time.perf_counter() - loop_start
    finally:
        if trackers is not None:
            trackers.close()

    if stopped:
        if main:
            events.message(
                f"Stopped on request at step {state.global_step} of {total_steps}; checkpoint step-{state.global_step} "
                "holds everything needed to resume"
            )
        return {"type": "stopped", "step": state.global_step}

    # The kept weights (the last, or the best validation's), the whole validation set once on them, the final artifact.
    result: dict[str, Any] = {"type": "result"}
    last_epoch = state.epoch if state.step_in_epoch else state.epoch - 1  # the last one trained, whole or not
    kept = _kept_checkpoint(keeper, state, last_epoch)
    revert = kept is not None and kept["step"] != state.global_step
    if revert and kind != parallel.FSDP:  # DDP's replicas share these parameters
        _load_weights(job_dir / kept["path"], loaded)
    full_valid = (
        task.evaluate(evaluator, valid_items, "full_valid") if valid_items and not (revert and kind == parallel.FSDP) else {}
    )
    weights = parallel.full_model_state(loaded.model, kind)  # a collective under FSDP
    if main:
        if full_valid:
            epoch = kept["epoch"] if kept else last_epoch
            events.emit(
                Metrics(step=kept["step"] if kept else state.global_step, total_steps=total_steps, epoch=epoch, **full_valid)
            )
        final_dir = job_dir / "final"
        if revert and kind == parallel.FSDP:  # the sharded model cannot take the best weights back: copy its artifact
            write_dir_atomically(final_dir, lambda tmp: _copy_artifact(job_dir / kept["path"], tmp))
        else:
            write_dir_atomically(final_dir, lambda tmp: model_io.save(tmp, loaded, tokenizer, weights))
        if kept:
            events.message(kept["reason"])
        events.message(f"Saved the final {'adapter' if loaded.is_adapter else 'model'} to {final_dir}")
        if run_tokens and run_step_time > 0:
            _record_throughput(spec.model, loaded.device, run_tokens / run_step_time / distributed.world_size(), events)
        result = events.emit(
            Result(
                trained_tokens=state.trained_tokens,
                train_runtime_s=state.train_runtime_s,
                train_loss=state.last_epoch_loss,
                model_path=str(model_path),
                adapter_path=str(final_dir),
                kept_checkpoint=kept,
            )
        )
    distributed.barrier()
    return result


def _step(
    forward: torch.nn.Module,
    kind: str,
    task: Task,
    items: Sequence[Any],
    units: int,
    trainable: list[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    opt,
    split: int,
) -> tuple[float, dict[str, float], int]:
    """One optimizer step over this process's share of `items` (`units` in all ranks' share), in
    `split` micro-batches; returns its summed loss and metrics. Every rank runs as many micro-batches as the busiest one (DDP and
    FSDP communicate inside forward and backward, so all must take part); padding ones count zero."""
    world, rank = distributed.world_size(), distributed.rank()
    units = max(units, 1)
    mine = micro_batches(items_of_rank(items, rank, world), split)
    rounds = max(len(micro_batches(items_of_rank(items, r, world), split)) for r in range(world))
    loss_total, metric_totals, tokens = 0.0, {}, 0
    for k in range(rounds):
        padding = k >= len(mine)
        with parallel.gradient_sync(forward, kind, sync=k == rounds - 1):
            loss_sum, metric_sums, n_tokens = task.loss(forward, items[:1] if padding else mine[k])
            # DDP and FSDP average gradients over processes; scale so the result is the sum over the step / its units.
            (loss_sum * (0.0 if padding else world / units)).backward()
        if padding:
            continue
        loss_total += float(loss_sum.detach())
        for name, value in metric_sums.items():
            metric_totals[name] = metric_totals.get(name, 0.0) + float(value)
        tokens += n_tokens
    if opt.max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(trainable, opt.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    for name in task.metric_names():
        metric_totals.setdefault(name, 0.0)
    return loss_total, {k: metric_totals[k] for k in task.metric_names()}, tokens


def _kept_checkpoint(keeper: Keeper, state: LoopState, last_epoch: int) -> dict[str, Any] | None:
    """Which checkpoint the result is, when the run judged itself by validation loss: its step, epoch,
    loss, job-relative path, and the sentence that says why (None without early stopping)."""
    best = keeper.best
    if not keeper.active or best.loss is None:
        return None
    stopped_early = state.global_step < state.total_steps
    return {
        "step": best.step,
        "epoch": best.epoch,
        keeper.key: best.loss,  # valid_loss, or valid_answer_rouge_l
        "path": f"checkpoints/step-{best.step}",
        "stopped_early": stopped_early,
        "reason": keeper.explain(state.global_step, last_epoch, stopped_early),
    }


def _copy_artifact(checkpoint: Path, target: Path) -> None:
    """A checkpoint's served files (the adapter or model and its tokenizer), without the trainer state."""
    for item in checkpoint.iterdir():
        if item.name != STATE_FILE:
            (shutil.copytree if item.is_dir() else shutil.copy2)(item, target / item.name)


def items_of_rank(items: Sequence[Any], rank: int, world: int) -> list[Any]:
    return list(items[rank::world])


def lr_factor(kind: str, warmup_steps: int, total_steps: int, min_ratio: float) -> Callable[[int], float]:
    """LambdaLR factor for the step with 0-based index s: ramp up over the warm-up (the first step
    already uses 1/warmup, so none is wasted at 0), then decay to `min_ratio` right after the last step."""

    def factor(s: int) -> float:
        if s < warmup_steps:
            return (s + 1) / warmup_steps
        if kind == "constant":
            return 1.0
        progress = min(1.0, (s - warmup_steps) / max(1, total_steps - warmup_steps))
        shape = 1.0 - progress if kind == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
        return min_ratio + (1.0 - min_ratio) * shape

    return factor


def _spread(total_steps: int, n: int) -> set[int]:
    """n steps spread evenly over the run, the last one last: with n = epochs, the epoch ends."""
    n = max(0, min(n, total_steps))
    return {round(total_steps * i / n) for i in range(1, n + 1)} if n else set()


# --- checkpoints and resume ----------------------------------------------------------------------


def latest_checkpoint(job_dir: Path) -> Path | None:
    """The complete checkpoint with the highest step, or None. Temporary directories never match."""
    found: list[tuple[int, Path]] = []
    root = job_dir / "checkpoints"
    if root.is_dir():
        for path in root.iterdir():
            match = re.fullmatch(r"step-(\d+)", path.name)
            if match and (path / STATE_FILE).is_file() and model_io.weights_file(path).is_file():
                found.append((int(match.group(1)), path))
    return max(found)[1] if found else None


def save_checkpoint(
    job_dir: Path,
    loaded: model_io.Loaded,
    tokenizer: Any,
    state: LoopState,
    module: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    kind: str = parallel.SINGLE,
) -> Path:
    """Write checkpoints/step-N: the artifact as served, plus trainer_state.pt to resume from.
    Every rank calls it (FSDP gathers the whole weights and optimizer state); rank 0 writes."""
    target = job_dir / "checkpoints" / f"step-{state.global_step}"
    weights = parallel.full_model_state(loaded.model, kind)
    optimizer_state = parallel.optimizer_state(module, optimizer, kind)

    def write(tmp: Path) -> None:
        model_io.save(tmp, loaded, tokenizer, weights)
        rng = {"torch": torch.get_rng_state(), "python": random.getstate()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        torch.save(
            {"state": asdict(state), "optimizer": optimizer_state, "scheduler": scheduler.state_dict(), "rng": rng},
            tmp / STATE_FILE,
        )

    if distributed.is_main():
        write_dir_atomically(target, write)
    return target


def _load_checkpoint(checkpoint: Path, loaded: model_io.Loaded, total_steps: int) -> dict[str, Any]:
    """Load a checkpoint's weights into the (not yet wrapped) model; return the rest of what it saved."""
    saved = torch.load(checkpoint / STATE_FILE, map_location="cpu", weights_only=False)  # our own file
    if saved["state"]["total_steps"] != total_steps:
        raise ValueError(
            f"{checkpoint} was written by a run of {saved['state']['total_steps']} steps, this one has "
            f"{total_steps}: not the same job"
        )
    _load_weights(checkpoint, loaded)
    return saved


def _load_weights(checkpoint: Path, loaded: model_io.Loaded) -> None:
    """A checkpoint's trained weights into the (unwrapped, or DDP-wrapped: same parameters) model, in place."""
    from safetensors.torch import load_file

    weights = load_file(model_io.weights_file(checkpoint), device=str(loaded.device))
    if loaded.is_adapter:
        from peft import set_peft_model_state_dict

        result = set_peft_model_state_dict(loaded.model, weights)
        if result.unexpected_keys:
            raise ValueError(f"{checkpoint} does not match this adapter: unexpected {result.unexpected_keys[:3]}")
    else:
        loaded.model.load_state_dict(weights, strict=False)


def _restore(
    saved: dict[str, Any], module: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, kind: str
) -> LoopState:
    """Optimizer, schedule and RNG as the checkpoint left them; returns where training stands."""
    parallel.load_optimizer_state(module, optimizer, saved["optimizer"], kind)
    scheduler.load_state_dict(saved["scheduler"])
    torch.set_rng_state(saved["rng"]["torch"])
    random.setstate(saved["rng"]["python"])
    if "cuda" in saved["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["rng"]["cuda"])
    return LoopState(**saved["state"])


def _record_throughput(model_ref: str, device: torch.device, tokens_per_second: float, events: EventWriter) -> None:
    """Remember this run's training speed, so data reports can estimate how long a job takes. Never fails a run."""
    try:
        from tuneserve.models.throughput import record_throughput

        record_throughput(model_ref, device.type, tokens_per_second)
    except Exception as exc:  # a missing module or an unwritable cache only costs the estimate
        events.message(f"Could not record the training throughput: {type(exc).__name__}: {exc}", level="warn")


@contextlib.contextmanager
def _progress_bar(console: Console | None, total_steps: int, done: int) -> Iterator[Callable[[float], None]]:
    """Yield `advance(loss)`: a rich bar on the console, or a no-op when there is no console (the server)."""
    if console is None:
        yield lambda loss: None
        return
    columns = (
        TextColumn("step"),
        MofNCompleteColumn(),
        BarColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("train", total=total_steps, completed=done, loss="-")
        yield lambda loss: bar.update(task, advance=1, loss=f"{loss:.4f}")
