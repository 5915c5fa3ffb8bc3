"""Supervised fine-tuning with a LoRA adapter: the "supervised" + "lora" recipe, read top to bottom.

    read data -> load model + tokenizer -> format + mask -> collate -> train loop -> checkpoint each epoch
    -> save final -> record throughput

Owns: the model/adapter set-up, batching, the loss, the optimizer and schedule, per-epoch
validation and checkpoints (with resume from the newest one), the final adapter and the result.
Data: conversations (chat, prompt/completion, alpaca, ShareGPT, with tools) train their assistant
turns; raw text trains every token; preference pairs are refused with a DataError naming method
dpo (its own recipe). The measured training tokens/s (step time only, this process's steps) is
recorded per (model, device type) at the end, for the data report's time estimate.
Does not own: parsing data files (tuneserve.data), chat-template masking (training.formatting),
the event file format (training.events), or anything about jobs and the server.

Choices, and why:
- Loss is the mean over the trained tokens of a batch (not a mean of per-example means), so a
  long answer counts as much per token as a short one; this is what HF/TRL do.
- AdamW (weight decay 0: LoRA matrices are small and start at zero, decay only fights the update),
  gradient clipping at 1.0, linear warm-up over max(1, ceil(5% of steps)) then linear decay; the
  step being taken uses factor (s+1)/warmup during warm-up, so no step is wasted at lr 0, and the
  rate reaches 0 right after the last step.
- Shuffling uses a generator seeded by (seed, epoch), so an epoch's order does not depend on how
  many epochs ran in this process: a resumed run sees the same batches as an uninterrupted one.
- Checkpoints land only at epoch ends, so resuming means "start the next epoch" with the saved
  optimizer, schedule and RNG states; nothing mid-epoch has to be replayed.
- Every artifact directory is written under a temporary name and renamed into place, so a crash
  never leaves a directory that looks like a complete checkpoint.
"""

from __future__ import annotations

import contextlib
import math
import random
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from peft import LoraConfig, PeftModel, get_peft_model, set_peft_model_state_dict
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from tuneserve.data.records import DataError, PreferenceExample, Record
from tuneserve.models import resolve_model
from tuneserve.atomic import write_dir_atomically
from tuneserve.training.events import EventWriter
from tuneserve.training.formatting import IGNORE_INDEX, Formatted, format_examples
from tuneserve.training.spec import TrainingSpec

MAX_GRAD_NORM = 1.0
WARMUP_FRACTION = 0.05
EPOCH_VALID_EXAMPLES = 64  # per-epoch validation is a cheap signal; the full set is scored once at the end
ADAPTER_FILE = "adapter_model.safetensors"
STATE_FILE = "trainer_state.pt"


@dataclass
class TrainerState:
    """What a checkpoint must carry besides weights and optimizer, so a resumed run can finish the job exactly."""

    global_step: int = 0
    epochs_done: int = 0
    total_steps: int = 0
    trained_tokens: int = 0
    train_runtime_s: float = 0.0
    epoch_losses: list[float] = field(default_factory=list)
    epoch_accuracies: list[float] = field(default_factory=list)


@dataclass
class Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    n_tokens: int  # non-pad tokens: what the forward pass really processed


def run(spec: TrainingSpec, job_dir: Path, events: EventWriter, *, console: Console | None = None) -> dict[str, Any]:
    """Train, checkpoint and save one SFT LoRA job; return the emitted result event."""
    hp = spec.hyperparameters
    device, dtype = _device_and_dtype()
    _seed_everything(spec.seed)

    # 1. Read the data first: a file this recipe cannot train on fails before a model loads.
    train_records = _load_records(spec.training_file, "training")
    valid_records = _load_records(spec.validation_file, "validation") if spec.validation_file else []

    # 2. Load the base model, its tokenizer, and the adapter to train.
    model_dir = resolve_model(spec.model)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = _load_model(spec, model_dir, device, dtype, events)
    trainable = [p for p in model.parameters() if p.requires_grad]
    pad_id = _pad_id(tokenizer)

    # 3. Format and mask the data through the model's own chat template (raw text as it is).
    train_set = _format(train_records, tokenizer, spec, events, "training")
    valid_set = _format(valid_records, tokenizer, spec, events, "validation")
    if not train_set:
        raise DataError(f"no training example has a trained token within max_seq_length={spec.max_seq_length}")

    # 4. Optimizer and schedule.
    steps_per_epoch = math.ceil(len(train_set) / hp.batch_size)
    total_steps = steps_per_epoch * hp.n_epochs
    warmup_steps = max(1, math.ceil(WARMUP_FRACTION * total_steps))
    optimizer = torch.optim.AdamW(trainable, lr=hp.learning_rate, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _linear_warmup_decay(warmup_steps, total_steps))
    events.message(
        f"Training on {len(train_set)} examples ({len(valid_set)} validation): {hp.n_epochs} epochs x "
        f"{steps_per_epoch} steps of batch {hp.batch_size} = {total_steps} steps, warm-up {warmup_steps}, "
        f"peak learning rate {hp.learning_rate:g}, device {device.type}"
    )

    # 5. Resume from the newest complete checkpoint, if an earlier attempt left one.
    state = TrainerState(total_steps=total_steps)
    run_tokens, run_step_time = 0, 0.0  # this process's steps only: the measured throughput
    resume_from = latest_checkpoint(job_dir)
    if resume_from is not None:
        state = _resume(resume_from, model, optimizer, scheduler, device, total_steps)
        events.message(f"Resumed from checkpoint {resume_from.name}")

    # 6. The loop: one epoch at a time, a checkpoint at the end of each.
    with _progress_bar(console, total_steps, state.global_step) as advance:
        for epoch in range(state.epochs_done + 1, hp.n_epochs + 1):
            loop_start = time.perf_counter()
            model.train()
            epoch_loss, epoch_correct, epoch_count, epoch_steps = 0.0, 0, 0, 0
            win_loss, win_correct, win_count, win_steps, win_tokens, win_time = 0.0, 0, 0, 0, 0, 0.0
            for examples in _batches(train_set, hp.batch_size, spec.seed, epoch):
                step_start = time.perf_counter()
                batch = _collate(examples, pad_id, device)
                loss, correct, count = _loss_and_accuracy(model, batch)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trainable, MAX_GRAD_NORM)
                learning_rate = scheduler.get_last_lr()[0]  # the rate this step uses
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)

                step_loss = loss.item()
                state.global_step += 1
                state.trained_tokens += batch.n_tokens
                epoch_loss, epoch_correct, epoch_count, epoch_steps = epoch_loss + step_loss, epoch_correct + correct, epoch_count + count, epoch_steps + 1
                win_loss, win_correct, win_count, win_steps = win_loss + step_loss, win_correct + correct, win_count + count, win_steps + 1
                win_tokens += batch.n_tokens
                step_time = time.perf_counter() - step_start
                win_time += step_time
                run_tokens, run_step_time = run_tokens + batch.n_tokens, run_step_time + step_time
                advance(step_loss)
                if state.global_step % spec.logging_steps == 0:
                    events.emit(
                        "metrics",
                        step=state.global_step,
                        total_steps=total_steps,
                        epoch=epoch,
                        train_loss=win_loss / win_steps,
                        train_mean_token_accuracy=win_correct / max(win_count, 1),
                        learning_rate=learning_rate,
                        tokens_per_second=win_tokens / max(win_time, 1e-9),
                    )
                    win_loss, win_correct, win_count, win_steps, win_tokens, win_time = 0.0, 0, 0, 0, 0, 0.0

            state.epochs_done = epoch
            state.epoch_losses.append(epoch_loss / epoch_steps)
            state.epoch_accuracies.append(epoch_correct / max(epoch_count, 1))
            checkpoint_metrics: dict[str, Any] = {
                "step": state.global_step,
                "train_loss": state.epoch_losses[-1],
                "train_mean_token_accuracy": state.epoch_accuracies[-1],
            }
            valid = _evaluate(model, valid_set[:EPOCH_VALID_EXAMPLES], hp.batch_size, pad_id, device, "valid")
            if valid:
                events.emit("metrics", step=state.global_step, total_steps=total_steps, epoch=epoch, **valid)
                checkpoint_metrics.update(valid)
            state.train_runtime_s += time.perf_counter() - loop_start  # before the save: a resumed run counts it the same
            path = save_checkpoint(job_dir, model, tokenizer, spec, state, optimizer, scheduler)
            events.emit("checkpoint", step=state.global_step, epoch=epoch, path=path.relative_to(job_dir).as_posix(), metrics=checkpoint_metrics)

    # 7. Score the whole validation set, save the final adapter, record the throughput, report.
    full_valid = _evaluate(model, valid_set, hp.batch_size, pad_id, device, "full_valid")
    if full_valid:
        events.emit("metrics", step=state.global_step, total_steps=total_steps, epoch=state.epochs_done, **full_valid)
    final_dir = job_dir / "final"
    _write_atomically(final_dir, lambda tmp: _save_adapter(tmp, model, tokenizer, spec))
    events.message(f"Saved the final adapter to {final_dir}")
    if run_tokens and run_step_time > 0:
        _record_throughput(spec.model, device, run_tokens / run_step_time, events)
    return events.emit(
        "result",
        trained_tokens=state.trained_tokens,
        train_runtime_s=state.train_runtime_s,
        train_loss=state.epoch_losses[-1] if state.epoch_losses else None,
        model_path=str(model_dir),
        adapter_path=str(final_dir),
    )


# --- set-up -------------------------------------------------------------------------------------


def _device_and_dtype() -> tuple[torch.device, torch.dtype]:
    """bf16 on CUDA (half the memory, full speed); float32 on CPU, where bf16 matmuls are slow or missing."""
    if torch.cuda.is_available():
        return torch.device("cuda"), torch.bfloat16
    return torch.device("cpu"), torch.float32


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def _load_model(spec: TrainingSpec, model_dir: Path, device: torch.device, dtype: torch.dtype, events: EventWriter) -> PeftModel:
    """The base model wrapped with a trainable adapter: a new LoRA, or `init_adapter` to continue from."""
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device)
    if spec.init_adapter:
        model = PeftModel.from_pretrained(base, spec.init_adapter, is_trainable=True)
        events.message(f"Continuing from adapter {spec.init_adapter} (its LoRA shape is used, not the spec's)")
    else:
        lora = spec.lora
        config = LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=lora.target_modules,
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(base, config)
    # Serving looks the base model up by the name the user gave, not by this machine's cache path.
    model.peft_config[model.active_adapter].base_model_name_or_path = spec.model
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_total = sum(p.numel() for p in model.parameters())
    events.message(f"Loaded {spec.model} from {model_dir} ({dtype}, {device.type}): {n_trainable:,} of {n_total:,} parameters trainable")
    return model


def _pad_id(tokenizer: Any) -> int:
    """Any id works for padding: padded positions are masked by length, never recognised by id."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def _load_records(path: str, kind: str) -> list[Record]:
    """Every record of a data file; preference pairs are refused (they need the DPO recipe)."""
    from tuneserve.data import load_examples  # the data package owns every file format and its validation

    records = load_examples(Path(path))
    if isinstance(records[0], PreferenceExample):  # a file holds one format, so the first record tells
        raise DataError(
            f"preference data needs method dpo: the {kind} file holds preference pairs (chosen/rejected); "
            "supervised fine-tuning trains on conversations, prompt/completion, or text",
            code="preference_data_for_sft",
        )
    return records


def _format(records: list[Record], tokenizer: Any, spec: TrainingSpec, events: EventWriter, kind: str) -> list[Formatted]:
    formatted, dropped = format_examples(tokenizer, records, spec.max_seq_length)
    if dropped:
        events.message(
            f"Dropped {dropped} of {len(records)} {kind} examples: no trained token left "
            f"within max_seq_length={spec.max_seq_length}",
            level="warn",
        )
    return formatted


def _record_throughput(model_ref: str, device: torch.device, tokens_per_second: float, events: EventWriter) -> None:
    """Remember this run's training speed, so data reports can estimate how long a job takes. Never fails a run."""
    try:
        from tuneserve.models.throughput import record_throughput

        record_throughput(model_ref, device.type, tokens_per_second)
    except Exception as exc:  # a missing module or an unwritable cache only costs the estimate
        events.message(f"Could not record the training throughput: {type(exc).__name__}: {exc}", level="warn")


def _linear_warmup_decay(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """LambdaLR factor for the step with 0-based index s: ramp to 1 over the warm-up, then down to 0."""

    def factor(s: int) -> float:
        if s < warmup_steps:
            return (s + 1) / warmup_steps
        return max(0.0, (total_steps - s) / max(1, total_steps - warmup_steps))

    return factor


# --- data ---------------------------------------------------------------------------------------


def _batches(examples: Sequence[Formatted], batch_size: int, seed: int, epoch: int) -> Iterator[list[Formatted]]:
    """This epoch's shuffled batches; the order depends only on (seed, epoch)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(len(examples), generator=generator).tolist()
    for start in range(0, len(order), batch_size):
        yield [examples[i] for i in order[start : start + batch_size]]


def _collate(examples: Sequence[Formatted], pad_id: int, device: torch.device) -> Batch:
    """Right-pad to the longest example; padding gets attention 0 and label -100."""
    width = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        input_ids[row, :n] = torch.tensor(example.input_ids)
        attention_mask[row, :n] = 1
        labels[row, :n] = torch.tensor(example.labels)
    n_tokens = int(attention_mask.sum())
    return Batch(input_ids.to(device), attention_mask.to(device), labels.to(device), n_tokens)


# --- loss and evaluation ------------------------------------------------------------------------


def _token_losses(model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Summed cross-entropy over trained tokens, how many were predicted right, and how many there were.

    Position t predicts token t+1; only positions whose next token is trained are kept, before the
    (large) vocabulary dimension goes through cross-entropy.
    """
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    labels = batch.labels[:, 1:]
    keep = labels != IGNORE_INDEX
    picked = logits[:, :-1][keep].float()
    targets = labels[keep]
    loss_sum = F.cross_entropy(picked, targets, reduction="sum")
    correct = (picked.argmax(dim=-1) == targets).sum()
    return loss_sum, correct, keep.sum()


def _loss_and_accuracy(model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, int, int]:
    """The training loss: mean over the batch's trained tokens."""
    loss_sum, correct, count = _token_losses(model, batch)
    n = int(count)
    return loss_sum / max(n, 1), int(correct), n


@torch.no_grad()
def _evaluate(model: torch.nn.Module, examples: Sequence[Formatted], batch_size: int, pad_id: int, device: torch.device, prefix: str) -> dict[str, float]:
    """Token-weighted loss and accuracy over `examples` (in order, no dropout); {} when there are none."""
    if not examples:
        return {}
    was_training = model.training
    model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    for start in range(0, len(examples), batch_size):
        batch = _collate(examples[start : start + batch_size], pad_id, device)
        batch_loss, batch_correct, batch_count = _token_losses(model, batch)
        loss_sum, correct, count = loss_sum + batch_loss.item(), correct + int(batch_correct), count + int(batch_count)
    model.train(was_training)
    return {f"{prefix}_loss": loss_sum / max(count, 1), f"{prefix}_mean_token_accuracy": correct / max(count, 1)}


# --- artifacts: checkpoints, resume, final adapter -----------------------------------------------


def latest_checkpoint(job_dir: Path) -> Path | None:
    """The complete checkpoint with the highest step, or None. Temporary directories never match."""
    found: list[tuple[int, Path]] = []
    root = job_dir / "checkpoints"
    if root.is_dir():
        for path in root.iterdir():
            match = re.fullmatch(r"step-(\d+)", path.name)
            if match and (path / STATE_FILE).is_file() and (path / ADAPTER_FILE).is_file():
                found.append((int(match.group(1)), path))
    return max(found)[1] if found else None


def save_checkpoint(job_dir: Path, model: PeftModel, tokenizer: Any, spec: TrainingSpec, state: TrainerState, optimizer: torch.optim.Optimizer, scheduler: Any) -> Path:
    """Write checkpoints/step-N: the adapter as served, plus trainer_state.pt to resume from."""
    target = job_dir / "checkpoints" / f"step-{state.global_step}"

    def write(tmp: Path) -> None:
        _save_adapter(tmp, model, tokenizer, spec)
        rng = {"torch": torch.get_rng_state(), "python": random.getstate()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        torch.save({"state": asdict(state), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng}, tmp / STATE_FILE)

    _write_atomically(target, write)
    return target


def _resume(checkpoint: Path, model: PeftModel, optimizer: torch.optim.Optimizer, scheduler: Any, device: torch.device, total_steps: int) -> TrainerState:
    """Load adapter weights, optimizer, schedule and RNG from a checkpoint; return where training stands."""
    saved = torch.load(checkpoint / STATE_FILE, map_location="cpu", weights_only=False)  # our own file
    state = TrainerState(**saved["state"])
    if state.total_steps != total_steps:
        raise ValueError(f"{checkpoint} was written by a run of {state.total_steps} steps, this one has {total_steps}: not the same job")
    result = set_peft_model_state_dict(model, load_file(checkpoint / ADAPTER_FILE, device=str(device)))
    if result.unexpected_keys:
        raise ValueError(f"{checkpoint} does not match this adapter: unexpected {result.unexpected_keys[:3]}")
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    torch.set_rng_state(saved["rng"]["torch"])
    random.setstate(saved["rng"]["python"])
    if "cuda" in saved["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["rng"]["cuda"])
    return state


def _save_adapter(directory: Path, model: PeftModel, tokenizer: Any, spec: TrainingSpec) -> None:
    """The adapter with the tokenizer and chat template beside it, so vLLM and PEFT load the directory as is."""
    # save_embedding_layers=False: we never resize the vocabulary, and the "auto" check would look
    # the base model up on the hub by name (a network call, and a warning offline).
    model.save_pretrained(directory, save_embedding_layers=False)
    tokenizer.save_pretrained(directory)


def _write_atomically(target: Path, write: Callable[[Path], None]) -> None:
    """Readers (and a resumed run) see the old directory or the complete new one."""
    write_dir_atomically(target, write)


# --- progress -----------------------------------------------------------------------------------


@contextlib.contextmanager
def _progress_bar(console: Console | None, total_steps: int, done: int) -> Iterator[Callable[[float], None]]:
    """Yield `advance(loss)`: a rich bar on the console, or a no-op when there is no console (the server)."""
    if console is None:
        yield lambda loss: None
        return
    columns = (TextColumn("step"), MofNCompleteColumn(), BarColumn(), TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("train", total=total_steps, completed=done, loss="-")
        yield lambda loss: bar.update(task, advance=1, loss=f"{loss:.4f}")
