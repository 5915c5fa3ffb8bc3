"""Training throughput on CPU, two parts (`--part trainer|loss|both`, default both).

Part `trainer`: tuneserve's trainer against two baselines (`--baselines hf trl`), in one run: a plain
HF `Trainer` + PEFT, and TRL's `SFTTrainer` set up as a competent user would. Every side trains
SmolLM2-135M-Instruct with LoRA r=16 (alpha 32) on every linear layer, batch 8, 1 epoch, learning
rate 1e-3 with the same linear warm-up/decay, on the same examples: the first `--examples` items of
alpaca_en_demo, formatted once through the chat template with the answer tokens trained
(tuneserve.data.formatting; the baselines get the very same token ids and labels).

- hf: `transformers.Trainer`, random order, each batch right-padded to its longest example,
  the model's own loss (full logits for every position), fp32 (the CPU default).
- trl: `trl.SFTTrainer` (1.16; `pip install -e '.[bench]'`), random order, given the token ids and a
  completion mask (TRL builds the labels from it with `completion_only_loss=True`; checked equal to
  the others'). `padding_free=True`: each batch is one row of its examples end to end, no padding.
  TRL documents that for flash-attention, but TRL 1.16 allows it anywhere, and on CPU transformers'
  SDPA builds the block-diagonal mask from the restarting position ids (the same logits as padded
  rows, to 5e-5, checked by hand), though attention then spans the whole row; `max_length=None`
  because TRL refuses padding-free with a max length unless it packs, and the examples are already
  cut at MAX_LEN. TRL's own loss: log-probabilities from the hidden states in chunks, no full logits
  kept (on CPU it scores every position, prompt included). Precision as tuneserve chooses it (bf16
  base and autocast where the CPU computes bf16 natively, TRL's default; fp32 elsewhere), and no
  activation checkpointing (TRL turns it on by default, trading about 20% of the speed for memory;
  tuneserve and hf do not checkpoint either).
- tuneserve: `tuneserve.training.run.train` on a spec with the same settings: length-grouped
  batches (or padding-free packed rows where flash-attention exists), loss from the hidden states
  of trained positions only, in chunks.

Reported per side: non-pad tokens/s over the training loop (median), peak RSS during training, the
mean training loss over the epoch, and the loss of the trained adapter on 32 held-out examples
(scored identically, fp32, for all); then the ratios tuneserve / each baseline. Goals on a 2-core CPU:
against hf at least 2.5x the tokens/s with no more memory, against trl (issue 16) at least 1.3x, both
at a held-out loss within 2%.

Part `loss`: tuneserve's own `train()` twice, same data, settings and seed, only the loss differs:
- fused: tuneserve's loss (training.losses.token_cross_entropy): trained positions only, in chunks
  of CHUNK_TOKENS, gradients made in the forward pass; no positions x vocabulary logits kept;
- plain: today's full-logits loss as HF's causal LMs compute it: every position projected onto the
  49,152-token vocabulary with `lm_head`, the fp32 logits kept for backward, `F.cross_entropy` over
  the trained next tokens. It replaces `token_cross_entropy` in the recipe, in that child only.
The data are the `--loss-examples` longest alpaca_en_demo items (default 4: 606-751 tokens), batch 2,
so 2 steps (the second step's loss also checks that step 1's gradients agree). On CPU each example
over 256 tokens runs alone in its forward pass, and the plain loss's logits grow with the row's
length while the fused loss's are capped at one chunk, so long rows show the difference.
Reported: median tokens/s (and tokens per CPU-second of train(), steadier on a shared machine)
and peak RSS per side, the ratios fused / plain, and the mean training loss of each, which must
agree (the same math) to ~1e-3 relative. Peak RSS under glibc's default heap moves by +-300 MB
between runs of one side, so each side also runs once more with MALLOC_MMAP_THRESHOLD_=131072 (as
benchmarks/fsdp_memory.py does): RSS then follows live memory, the same to the MB every run, at
some cost in speed (their tokens/s are not used).

Each side runs in a fresh subprocess (so peak RSS is its own), `--repeat` times, alternating.

    . .venv/bin/activate
    export TUNESERVE_MODEL_CACHE=/tmp/tscache
    python benchmarks/train_throughput.py                       # both parts, 2 runs per side
    python benchmarks/train_throughput.py --part trainer --examples 256 --repeat 3 --json out.json
    python benchmarks/train_throughput.py --part trainer --baselines trl   # tuneserve against TRL only
    python benchmarks/train_throughput.py --part loss --repeat 3

GPU shapes (Llama-3.2-1B / 3.1-8B, MFU) are measured by benchmarks/gpu_suite.py.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
DEFAULT_DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "alpaca_en_demo.json"
BATCH, LR, RANK, ALPHA, MAX_LEN, WARMUP = 8, 1e-3, 16, 32, 1024, 0.05


def formatted_examples(data: Path, n: int):
    """The first n alpaca items, through SmolLM2's chat template: (input_ids, labels) lists."""
    from transformers import AutoTokenizer

    from tuneserve.data import load_examples
    from tuneserve.models import resolve_model
    from tuneserve.data.formatting import format_examples

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(MODEL))
    examples, _ = format_examples(tokenizer, load_examples(data)[:n], MAX_LEN)
    return tokenizer, examples


HELDOUT = 32  # examples after the training subset, scored the same way for both sides


def heldout_loss(adapter_dir: Path, data: Path, n: int) -> float:
    """Token-weighted loss of base + trained adapter (fp32) on the HELDOUT examples after the first n:
    the like-for-like quality check (the two sides see batches in different orders, so their
    running training losses differ even when the models end up equally good)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tuneserve.models import resolve_model
    from tuneserve.training.batching import collate_padded
    from tuneserve.training.losses import token_cross_entropy

    _, examples = formatted_examples(data, n + HELDOUT)
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(resolve_model(MODEL), dtype=torch.float32), adapter_dir
    ).eval()
    causal_lm = model.base_model.model
    total, count = 0.0, 0
    with torch.no_grad():
        for example in examples[n:]:
            batch = collate_padded([example], 0, torch.device("cpu"))
            hidden = causal_lm.model(input_ids=batch.input_ids, use_cache=False).last_hidden_state
            loss, _, tokens = token_cross_entropy(hidden, causal_lm.lm_head, batch.labels)
            total, count = total + float(loss), count + int(tokens)
    return total / count


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def trainer_arguments(out: str, n: int, seed: int) -> dict:
    """The TrainingArguments both baselines share: one epoch of n examples, the same schedule as tuneserve's spec."""
    import torch

    return dict(
        output_dir=out,
        per_device_train_batch_size=BATCH,
        num_train_epochs=1,
        learning_rate=LR,
        lr_scheduler_type="linear",
        warmup_steps=max(1, round(WARMUP * -(-n // BATCH))),
        weight_decay=0.0,
        max_grad_norm=1.0,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        seed=seed,
        dataloader_num_workers=0,
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
    )


def lora_config():
    from peft import LoraConfig

    return LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules="all-linear", task_type="CAUSAL_LM")


def run_hf(data: Path, n: int, seed: int) -> dict:
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    from tuneserve.models import resolve_model

    tokenizer, examples = formatted_examples(data, n)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rows = [{"input_ids": e.input_ids, "labels": e.labels} for e in examples]
    seen = {"tokens": 0}

    def collate(batch):
        width = max(len(r["input_ids"]) for r in batch)
        ids = torch.full((len(batch), width), pad)
        labels = torch.full((len(batch), width), -100)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, r in enumerate(batch):
            ids[i, : len(r["input_ids"])] = torch.tensor(r["input_ids"])
            labels[i, : len(r["labels"])] = torch.tensor(r["labels"])
            mask[i, : len(r["input_ids"])] = 1
        seen["tokens"] += int(mask.sum())
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    model = AutoModelForCausalLM.from_pretrained(resolve_model(MODEL), dtype=torch.float32)
    model = get_peft_model(model, lora_config())
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            **trainer_arguments(out, len(rows), seed), remove_unused_columns=False, bf16=torch.cuda.is_available()
        )
        trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=collate)
        start = time.perf_counter()
        output = trainer.train()
        runtime = time.perf_counter() - start
        rss = peak_rss_mb()
        model.save_pretrained(Path(out) / "adapter")
        heldout = heldout_loss(Path(out) / "adapter", data, n)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {
        "tokens": seen["tokens"],
        "runtime_s": runtime,
        "tokens_per_s": seen["tokens"] / runtime,
        "mean_loss": statistics.mean(losses),
        "last_loss": output.training_loss,
        "steps": len(losses),
        "peak_rss_mb": rss,
        "heldout_loss": heldout,
    }


def run_trl(data: Path, n: int, seed: int) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from tuneserve.data.formatting import IGNORE_INDEX
    from tuneserve.models import resolve_model
    from tuneserve.training.model import device_and_dtype

    tokenizer, examples = formatted_examples(data, n)
    # A pre-tokenized prompt-completion dataset as TRL takes it: the ids and which of them are the answer.
    rows = Dataset.from_list(
        [{"input_ids": e.input_ids, "completion_mask": [int(x != IGNORE_INDEX) for x in e.labels]} for e in examples]
    )
    _, dtype = device_and_dtype()  # bf16 where the CPU has it natively, as tuneserve decides
    model = AutoModelForCausalLM.from_pretrained(resolve_model(MODEL), dtype=dtype)
    with tempfile.TemporaryDirectory() as out:
        args = SFTConfig(
            **trainer_arguments(out, len(rows), seed),
            bf16=dtype == torch.bfloat16,
            padding_free=True,
            max_length=None,  # the examples are cut at MAX_LEN already; padding-free without packing needs None
            completion_only_loss=True,
            activation_checkpointing=False,  # TRL's default is on: memory for speed, which no other side trades
        )
        trainer = SFTTrainer(model=model, args=args, train_dataset=rows, processing_class=tokenizer, peft_config=lora_config())
        if list(trainer.train_dataset["labels"]) != [e.labels for e in examples]:
            raise RuntimeError("TRL's labels differ from the other sides': the trained tokens would not be the same")
        start = time.perf_counter()
        output = trainer.train()
        runtime = time.perf_counter() - start
        rss = peak_rss_mb()
        trainer.model.save_pretrained(Path(out) / "adapter")
        heldout = heldout_loss(Path(out) / "adapter", data, n)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    tokens = max(h.get("num_tokens", 0) for h in trainer.state.log_history)  # TRL's count: no padding to leave out
    return {
        "tokens": int(tokens),
        "runtime_s": runtime,
        "tokens_per_s": tokens / runtime,
        "mean_loss": statistics.mean(losses),
        "last_loss": output.training_loss,
        "steps": len(losses),
        "peak_rss_mb": rss,
        "heldout_loss": heldout,
    }


def run_tuneserve(data: Path, n: int, seed: int, packing: str = "auto") -> dict:
    from tuneserve.training.run import train
    from tuneserve.training.spec import Hyperparameters, TrainingSpec

    with tempfile.TemporaryDirectory() as tmp:
        subset = Path(tmp) / "alpaca.json"
        subset.write_text(json.dumps(json.loads(data.read_text())[:n]))
        spec = TrainingSpec(
            model=MODEL,
            training_file=str(subset),
            max_seq_length=MAX_LEN,
            seed=seed,
            n_checkpoints=1,
            validation_split=0,  # every example trains, as on the baselines' side
            lora={"r": RANK, "alpha": ALPHA},
            optimization={"warmup_ratio": WARMUP, "packing": packing},
            hyperparameters=Hyperparameters(n_epochs=1, batch_size=BATCH, learning_rate_multiplier=1.0, learning_rate=LR),
        )
        result = train(spec, Path(tmp) / "job")
        rss = peak_rss_mb()
        events = [json.loads(line) for line in (Path(tmp) / "job" / "events.jsonl").read_text().splitlines()]
        heldout = heldout_loss(Path(result["adapter_path"]), data, n)
    losses = [e["train_loss"] for e in events if e["type"] == "metrics" and "train_loss" in e]
    return {
        "tokens": result["trained_tokens"],
        "runtime_s": result["train_runtime_s"],
        "tokens_per_s": result["trained_tokens"] / result["train_runtime_s"],
        "mean_loss": statistics.mean(losses),
        "last_loss": result["train_loss"],
        "steps": len(losses),
        "peak_rss_mb": rss,
        "heldout_loss": heldout,
    }


# --- loss: tuneserve's chunked fused loss against the plain full-logits loss -------------------------

# The 4 longest alpaca items (606-751 tokens) in 2 steps of 2: the step-2 loss also checks the gradients of
# step 1 agree. About 35 s per run on 2 cores; `--part loss --repeat 3` takes 3.5-5 min (16 items: 3-5 min per run).
LOSS_EXAMPLES, LOSS_BATCH = 4, 2


def longest_subset(data: Path, n: int, out: Path) -> list[int]:
    """Write the n alpaca items with the longest formatted token sequences to `out` (in file order);
    return their lengths."""
    items = json.loads(data.read_text())
    _, examples = formatted_examples(data, len(items))  # every alpaca item fits MAX_LEN, so indices match
    assert len(examples) == len(items)
    chosen = sorted(sorted(range(len(items)), key=lambda i: -len(examples[i].input_ids))[:n])
    out.write_text(json.dumps([items[i] for i in chosen]))
    return [len(examples[i].input_ids) for i in chosen]


def plain_cross_entropy(hidden, lm_head, labels):
    """Today's loss, as HF's LlamaForCausalLM + ForCausalLMLoss compute it: logits for every position
    (prompt and padding included), cast to fp32 and kept for the backward pass, then cross-entropy
    summed over the trained next tokens. Same contract as token_cross_entropy: (sum, correct, count)."""
    import torch
    import torch.nn.functional as F

    from tuneserve.data.formatting import IGNORE_INDEX

    logits = lm_head(hidden.to(lm_head.weight.dtype)).float()  # [B, L, V]
    targets = F.pad(labels, (0, 1), value=IGNORE_INDEX)[:, 1:].reshape(-1)  # position t predicts t+1
    flat = logits.view(-1, logits.shape[-1])
    loss = F.cross_entropy(flat, targets, ignore_index=IGNORE_INDEX, reduction="sum")
    keep = targets != IGNORE_INDEX
    with torch.no_grad():
        correct = ((flat.argmax(-1) == targets) & keep).sum()
    return loss, correct, keep.sum()


def run_loss_side(data: Path, seed: int, packing: str, loss: str) -> dict:
    """tuneserve's train() on every item of `data`; loss "plain" swaps the recipe's loss in this process."""
    from tuneserve.training.recipes import sft
    from tuneserve.training.run import train
    from tuneserve.training.spec import Hyperparameters, TrainingSpec

    if loss == "plain":
        sft.token_cross_entropy = plain_cross_entropy  # what sft._cross_entropy calls, for training and evaluation
    with tempfile.TemporaryDirectory() as tmp:
        spec = TrainingSpec(
            model=MODEL,
            training_file=str(data),
            max_seq_length=MAX_LEN,
            seed=seed,
            n_checkpoints=1,
            validation_split=0,  # every example trains, as on the baselines' side
            lora={"r": RANK, "alpha": ALPHA},
            optimization={"warmup_ratio": WARMUP, "packing": packing},
            hyperparameters=Hyperparameters(n_epochs=1, batch_size=LOSS_BATCH, learning_rate_multiplier=1.0, learning_rate=LR),
        )
        cpu_start = cpu_seconds()
        result = train(spec, Path(tmp) / "job")
        cpu = cpu_seconds() - cpu_start
        rss = peak_rss_mb()
        events = [json.loads(line) for line in (Path(tmp) / "job" / "events.jsonl").read_text().splitlines()]
    losses = [e["train_loss"] for e in events if e["type"] == "metrics" and "train_loss" in e]
    return {
        "tokens": result["trained_tokens"],
        "runtime_s": result["train_runtime_s"],
        "tokens_per_s": result["trained_tokens"] / result["train_runtime_s"],
        "mean_loss": statistics.mean(losses),
        "last_loss": result["train_loss"],
        "steps": len(losses),
        "peak_rss_mb": rss,
        "cpu_s": cpu,
        "tokens_per_cpu_s": result["trained_tokens"] / cpu,
    }


def cpu_seconds() -> float:
    """CPU time of this process (user + system), all threads: less sensitive than wall time to other
    processes sharing the cores."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- driver ----------------------------------------------------------------------------------------


def child(args) -> None:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the training process sets it
    if args.child == "hf":
        result = run_hf(args.data, args.examples, args.seed)
    elif args.child == "trl":
        result = run_trl(args.data, args.examples, args.seed)
    elif args.child == "tuneserve":
        result = run_tuneserve(args.data, args.examples, args.seed, args.packing)
    else:  # "fused" or "plain": args.data is the subset itself
        result = run_loss_side(args.data, args.seed, args.packing, args.child)
    print("RESULT " + json.dumps(result), flush=True)


def run_side(args, side: str, data: Path | None = None, live_memory: bool = False) -> dict:
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONUNBUFFERED": "1"}
    if live_memory:
        # Blocks over 128 KB get their own mapping, returned when freed, so peak RSS follows live memory rather than
        # glibc's heap high-water mark (which moves by +-300 MB between runs of one side); it costs speed (page faults).
        env["MALLOC_MMAP_THRESHOLD_"] = "131072"
    cmd = [
        sys.executable,
        __file__,
        "--child",
        side,
        "--data",
        str(data or args.data),
        "--examples",
        str(args.examples),
        "--seed",
        str(args.seed),
        "--packing",
        args.packing,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    line = next((row for row in done.stdout.splitlines() if row.startswith("RESULT ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"{side} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(line.removeprefix("RESULT "))


def alternate(args, sides: tuple[str, ...], data: Path | None = None) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    for rep in range(args.repeat):
        for side in sides:
            result = run_side(args, side, data)
            runs[side].append(result)
            extra = f"  held-out loss {result['heldout_loss']:.4f}" if "heldout_loss" in result else ""
            extra += f"  {result['tokens_per_cpu_s']:.1f} tokens/CPU-s" if "tokens_per_cpu_s" in result else ""
            print(
                f"  rep {rep + 1} {side:9s}: {result['tokens_per_s']:8.1f} tokens/s  {result['runtime_s']:7.1f} s  "
                f"peak RSS {result['peak_rss_mb']:7.0f} MB  mean train loss {result['mean_loss']:.6f}{extra}  "
                f"({result['tokens']} tokens, {result['steps']} steps)",
                flush=True,
            )
    return runs


BASELINES = {"hf": "HF Trainer + PEFT", "trl": "TRL SFTTrainer"}
# tuneserve / baseline: the least tokens/s ratio and the most peak-RSS ratio asked for (issue 16 sets no memory goal for trl).
SPEED_GOAL = {"hf": 2.5, "trl": 1.3}
MEMORY_GOAL = {"hf": 1.0}


def trl_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("trl") is not None


def trainer_part(args) -> dict:
    baselines = args.baselines
    if baselines is None:  # both where TRL is there
        baselines = ["hf", "trl"] if trl_installed() else ["hf"]
        if "trl" not in baselines:
            print("TRL is not installed, so no trl side: pip install -e '.[bench]'", flush=True)
    print(
        f"\n== trainer: tuneserve vs {' and '.join(BASELINES[b] for b in baselines)}; {args.examples} examples, "
        f"batch {BATCH}; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs",
        flush=True,
    )
    runs = alternate(args, (*baselines, "tuneserve"))
    keys = ("tokens_per_s", "peak_rss_mb", "mean_loss", "heldout_loss", "runtime_s")
    med = {side: {k: statistics.median(r[k] for r in rs) for k in keys} for side, rs in runs.items()}
    print(f"\n{'side':10s} {'tokens/s':>10s} {'peak RSS MB':>12s} {'train loss':>11s} {'held-out loss':>14s}")
    for side, m in med.items():
        print(f"{side:10s} {m['tokens_per_s']:10.1f} {m['peak_rss_mb']:12.0f} {m['mean_loss']:11.4f} {m['heldout_loss']:14.4f}")
    ratios = {}
    for base in baselines:
        ours, theirs = med["tuneserve"], med[base]
        ratio = {
            "tokens_per_s": ours["tokens_per_s"] / theirs["tokens_per_s"],
            "peak_rss": ours["peak_rss_mb"] / theirs["peak_rss_mb"],
            "mean_loss": ours["mean_loss"] / theirs["mean_loss"],
            "heldout_loss": ours["heldout_loss"] / theirs["heldout_loss"],
        }
        memory_goal = f"goal <= {MEMORY_GOAL[base]}" if base in MEMORY_GOAL else "no goal"
        print(f"\nratio tokens/s (tuneserve / {base}): {ratio['tokens_per_s']:.2f}  (goal >= {SPEED_GOAL[base]})")
        print(f"ratio peak RSS (tuneserve / {base}): {ratio['peak_rss']:.2f}  ({memory_goal})")
        print(f"ratio mean training loss (tuneserve / {base}): {ratio['mean_loss']:.3f}  (batch order differs)")
        print(f"ratio held-out loss (tuneserve / {base}): {ratio['heldout_loss']:.3f}  (goal: within 2% of 1)")
        ratios[base] = ratio
    print(f"load average at end: {os.getloadavg()[0]:.2f}", flush=True)
    return {"runs": runs, "medians": med, "ratios": ratios}


def loss_part(args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        subset = Path(tmp) / "longest.json"
        lengths = longest_subset(args.data, args.loss_examples, subset)
        print(
            f"\n== loss: tuneserve's train(), chunked fused loss vs plain full-logits loss; the {len(lengths)} longest "
            f"alpaca items ({min(lengths)}-{max(lengths)} tokens, {sum(lengths)} in all), batch {LOSS_BATCH}; "
            f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs",
            flush=True,
        )
        runs = alternate(args, ("fused", "plain"), subset)
        live = {side: run_side(args, side, subset, live_memory=True) for side in ("fused", "plain")}
    keys = ("tokens_per_s", "tokens_per_cpu_s", "peak_rss_mb", "mean_loss", "runtime_s")
    med = {side: {k: statistics.median(r[k] for r in rs) for k in keys} for side, rs in runs.items()}
    print(f"\n{'side':10s} {'tokens/s':>10s} {'tokens/CPU-s':>13s} {'peak RSS MB':>12s} {'train loss':>11s}")
    for side, m in med.items():
        print(
            f"{side:10s} {m['tokens_per_s']:10.1f} {m['tokens_per_cpu_s']:13.1f} {m['peak_rss_mb']:12.0f} {m['mean_loss']:11.6f}"
        )
    # The loss of each repeat is deterministic (same seed, same data): compare them run by run.
    loss_gap = max(abs(f["mean_loss"] - p["mean_loss"]) / p["mean_loss"] for f, p in zip(runs["fused"], runs["plain"]))
    ratios = {
        "tokens_per_s": med["fused"]["tokens_per_s"] / med["plain"]["tokens_per_s"],
        "tokens_per_cpu_s": med["fused"]["tokens_per_cpu_s"] / med["plain"]["tokens_per_cpu_s"],
        "peak_rss": med["fused"]["peak_rss_mb"] / med["plain"]["peak_rss_mb"],
        "mean_loss_rel_diff": loss_gap,
    }
    print(f"ratio tokens/s (fused / plain): {ratios['tokens_per_s']:.2f}  (wall time of the training loop)")
    print(
        f"ratio tokens/CPU-s (fused / plain): {ratios['tokens_per_cpu_s']:.2f}  (CPU time of train(), model load "
        f"included: steadier when other processes share the cores)"
    )
    print(
        f"ratio peak RSS (fused / plain): {ratios['peak_rss']:.2f}  "
        f"({med['plain']['peak_rss_mb'] - med['fused']['peak_rss_mb']:.0f} MB less)"
    )
    saved = [p["peak_rss_mb"] - f["peak_rss_mb"] for f, p in zip(runs["fused"], runs["plain"])]
    print(f"peak RSS plain - fused, repeat by repeat: {', '.join(f'{x:.0f}' for x in saved)} MB  (glibc's heap: noisy)")
    ratios["live_peak_rss"] = live["fused"]["peak_rss_mb"] / live["plain"]["peak_rss_mb"]
    print(
        f"peak RSS with MALLOC_MMAP_THRESHOLD_=131072 (follows live memory, the same to the MB run after run; one run "
        f"each): fused {live['fused']['peak_rss_mb']:.0f} MB, plain {live['plain']['peak_rss_mb']:.0f} MB, "
        f"ratio {ratios['live_peak_rss']:.2f} ({live['plain']['peak_rss_mb'] - live['fused']['peak_rss_mb']:.0f} MB less)"
    )
    print(
        f"mean training loss, largest relative difference fused vs plain: {loss_gap:.1e}  "
        f"({'OK' if loss_gap < 1e-3 else 'MISMATCH'}: goal < 1e-3, the same math)"
    )
    print(f"load average at end: {os.getloadavg()[0]:.2f}", flush=True)
    return {"lengths": lengths, "runs": runs, "live_memory_runs": live, "medians": med, "ratios": ratios}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["trainer", "loss", "both"], default="both")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--examples", type=int, default=128, help="trainer part: the first N alpaca items")
    parser.add_argument(
        "--baselines",
        nargs="+",
        choices=list(BASELINES),
        help="trainer part: the sides tuneserve is measured against (default: hf, and trl where it is installed)",
    )
    parser.add_argument("--loss-examples", type=int, default=LOSS_EXAMPLES, help="loss part: the N longest alpaca items")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--packing", default="auto", help="tuneserve's packing option (auto, per_example, length_grouped, padding_free)"
    )
    parser.add_argument("--json", help="write the results as JSON here")
    parser.add_argument("--child", choices=[*BASELINES, "tuneserve", "fused", "plain"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    if args.baselines and "trl" in args.baselines and not trl_installed():
        parser.error("the trl side needs TRL: pip install -e '.[bench]'")

    results = {}
    if args.part in ("trainer", "both"):
        results["trainer"] = trainer_part(args)
    if args.part in ("loss", "both"):
        results["loss"] = loss_part(args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
