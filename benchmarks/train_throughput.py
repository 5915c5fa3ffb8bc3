"""Training throughput: tuneserve's trainer against a plain HF `Trainer` + PEFT baseline, in one run.

Both sides train SmolLM2-135M-Instruct with LoRA r=16 (alpha 32) on every linear layer, batch 8,
1 epoch, learning rate 1e-3 with the same linear warm-up/decay, on the same examples: the first
`--examples` items of alpaca_en_demo, formatted once through the chat template with the answer
tokens trained (tuneserve.training.formatting; the baseline gets the very same token ids and labels).

- baseline: `transformers.Trainer`, random order, each batch right-padded to its longest example,
  the model's own loss (full logits for every position).
- tuneserve: `tuneserve.training.run.train` on a spec with the same settings: length-grouped
  batches (or padding-free packed rows where flash-attention exists), loss from the hidden states
  of trained positions only, in chunks.

Each side runs in a fresh subprocess (so peak RSS is its own), `--repeat` times, alternating.
Reported per side: non-pad tokens/s over the training loop (median), peak RSS during training, the
mean training loss over the epoch, and the loss of the trained adapter on 32 held-out examples
(scored identically, fp32, for both); then the ratios tuneserve / baseline. Goal on a 2-core CPU: at least
2.5x the tokens/s with no more memory and a matching loss.

    . .venv/bin/activate
    export TUNESERVE_MODEL_CACHE=/tmp/tscache
    python benchmarks/train_throughput.py                       # 128 examples, 2 runs per side
    python benchmarks/train_throughput.py --examples 256 --repeat 3 --json out.json

On a GPU, `--gpu-shapes` adds random-initialised models shaped like Llama-3.2-1B and
Llama-3.1-8B at sequence length 2048 with LoRA in bf16 (tuneserve's trainer only): tokens/s,
MFU against the bf16 matmul peak measured on that GPU in the same run, and peak memory.
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
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "alpaca_en_demo.json"
BATCH, LR, RANK, ALPHA, MAX_LEN, WARMUP = 8, 1e-3, 16, 32, 1024, 0.05


def formatted_examples(data: Path, n: int):
    """The first n alpaca items, through SmolLM2's chat template: (input_ids, labels) lists."""
    from transformers import AutoTokenizer

    from tuneserve.data import load_examples
    from tuneserve.models import resolve_model
    from tuneserve.training.formatting import format_examples

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
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(resolve_model(MODEL), dtype=torch.float32), adapter_dir).eval()
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


def run_baseline(data: Path, n: int, seed: int) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
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
    model = get_peft_model(model, LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules="all-linear", task_type="CAUSAL_LM"))
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, per_device_train_batch_size=BATCH, num_train_epochs=1, learning_rate=LR,
                                 lr_scheduler_type="linear", warmup_steps=max(1, round(WARMUP * -(-len(rows) // BATCH))),
                                 weight_decay=0.0, max_grad_norm=1.0, logging_steps=1, save_strategy="no", report_to=[],
                                 seed=seed, dataloader_num_workers=0, remove_unused_columns=False, disable_tqdm=True,
                                 use_cpu=not torch.cuda.is_available(), bf16=torch.cuda.is_available())
        trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=collate)
        start = time.perf_counter()
        output = trainer.train()
        runtime = time.perf_counter() - start
        rss = peak_rss_mb()
        model.save_pretrained(Path(out) / "adapter")
        heldout = heldout_loss(Path(out) / "adapter", data, n)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"tokens": seen["tokens"], "runtime_s": runtime, "tokens_per_s": seen["tokens"] / runtime,
            "mean_loss": statistics.mean(losses), "last_loss": output.training_loss, "steps": len(losses),
            "peak_rss_mb": rss, "heldout_loss": heldout}


def run_tuneserve(data: Path, n: int, seed: int, packing: str = "auto") -> dict:
    from tuneserve.training.run import train
    from tuneserve.training.spec import Hyperparameters, TrainingSpec

    with tempfile.TemporaryDirectory() as tmp:
        subset = Path(tmp) / "alpaca.json"
        subset.write_text(json.dumps(json.loads(data.read_text())[:n]))
        spec = TrainingSpec(model=MODEL, training_file=str(subset), max_seq_length=MAX_LEN, seed=seed, n_checkpoints=1,
                            lora={"r": RANK, "alpha": ALPHA}, optimization={"warmup_ratio": WARMUP, "packing": packing},
                            hyperparameters=Hyperparameters(n_epochs=1, batch_size=BATCH, learning_rate_multiplier=1.0, learning_rate=LR))
        result = train(spec, Path(tmp) / "job")
        rss = peak_rss_mb()
        events = [json.loads(line) for line in (Path(tmp) / "job" / "events.jsonl").read_text().splitlines()]
        heldout = heldout_loss(Path(result["adapter_path"]), data, n)
    losses = [e["train_loss"] for e in events if e["type"] == "metrics" and "train_loss" in e]
    return {"tokens": result["trained_tokens"], "runtime_s": result["train_runtime_s"],
            "tokens_per_s": result["trained_tokens"] / result["train_runtime_s"], "mean_loss": statistics.mean(losses),
            "last_loss": result["train_loss"], "steps": len(losses), "peak_rss_mb": rss, "heldout_loss": heldout}


# --- GPU: MFU on Llama-shaped random models ----------------------------------------------------------

GPU_SHAPES = {  # hidden, intermediate, layers, heads, kv heads, vocab (the published configs)
    "llama-3.2-1b": (2048, 8192, 16, 32, 8, 128256),
    "llama-3.1-8b": (4096, 14336, 32, 32, 8, 128256),
}


def matmul_peak_tflops() -> float:
    """The bf16 matmul rate this GPU reaches on large square matrices: the MFU denominator."""
    import torch

    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start, reps = time.perf_counter(), 50
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize()
    return 2 * 8192**3 * reps / (time.perf_counter() - start) / 1e12


def run_gpu_shape(name: str, steps: int, seq: int, batch: int) -> dict:
    """LoRA r=16 on all linear layers of a random Llama-shaped model, bf16, packed rows of `seq` tokens."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tuneserve.training import model as model_io
    from tuneserve.training.events import NullEventWriter
    from tuneserve.training.loop import train_loop
    from tuneserve.training.recipes.sft import SupervisedTask
    from tuneserve.training.formatting import Formatted
    from tuneserve.training.spec import Hyperparameters, TrainingSpec

    hidden, inter, layers, heads, kv, vocab = GPU_SHAPES[name]
    config = LlamaConfig(hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=kv, vocab_size=vocab, max_position_embeddings=seq)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        with torch.device("cuda"):
            LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(model_dir)
        from tuneserve.models import resolve_model
        tokenizer = __import__("transformers").AutoTokenizer.from_pretrained(resolve_model(MODEL))
        spec = TrainingSpec(model=str(model_dir), training_file="-", max_seq_length=seq, n_checkpoints=1, lora={"r": 16, "alpha": 32},
                            optimization={"gradient_checkpointing": True},
                            hyperparameters=Hyperparameters(n_epochs=1, batch_size=batch, learning_rate_multiplier=1.0, learning_rate=1e-4))
        events = NullEventWriter()
        loaded = model_io.load(spec, model_dir, events)
        generator = torch.Generator().manual_seed(0)
        items = [Formatted(ids := torch.randint(0, vocab, (seq,), generator=generator).tolist(), ids) for _ in range(steps * batch)]
        task = SupervisedTask(loaded, 0, batch)
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        train_loop(spec, Path(tmp) / "job", events, loaded, tokenizer, task, items, [], model_path=model_dir)
        torch.cuda.synchronize()
        runtime = time.perf_counter() - start
        n_params = sum(p.numel() for p in loaded.causal_lm.parameters())
    tokens = steps * batch * seq
    # LoRA training: forward 2N + backward through activations 2N per token (frozen weights need no weight
    # gradients), plus attention 4 * layers * seq * hidden (forward) x 2 (backward); no recompute counted.
    flops = tokens * (4 * n_params + 8 * layers * seq * hidden)
    return {"shape": name, "tokens_per_s": tokens / runtime, "achieved_tflops": flops / runtime / 1e12,
            "peak_memory_gb": torch.cuda.max_memory_allocated() / 2**30, "runtime_s": runtime}


# --- driver ----------------------------------------------------------------------------------------


def child(args) -> None:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the training process sets it
    if args.child == "baseline":
        result = run_baseline(args.data, args.examples, args.seed)
    else:
        result = run_tuneserve(args.data, args.examples, args.seed, args.packing)
    print("RESULT " + json.dumps(result), flush=True)


def run_side(args, side: str) -> dict:
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, __file__, "--child", side, "--data", str(args.data), "--examples", str(args.examples), "--seed", str(args.seed),
           "--packing", args.packing]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    line = next((l for l in done.stdout.splitlines() if l.startswith("RESULT ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"{side} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(line.removeprefix("RESULT "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--examples", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--packing", default="auto", help="tuneserve's packing option (auto, per_example, length_grouped, padding_free)")
    parser.add_argument("--gpu-shapes", action="store_true", help="also measure Llama-3.2-1B/3.1-8B shapes (CUDA)")
    parser.add_argument("--json", help="write the results as JSON here")
    parser.add_argument("--child", choices=["baseline", "tuneserve"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; {args.examples} examples, batch {BATCH}",
          flush=True)
    runs: dict[str, list[dict]] = {"baseline": [], "tuneserve": []}
    for rep in range(args.repeat):
        for side in ("baseline", "tuneserve"):
            result = run_side(args, side)
            runs[side].append(result)
            print(f"  rep {rep + 1} {side:9s}: {result['tokens_per_s']:8.1f} tokens/s  {result['runtime_s']:7.1f} s  "
                  f"peak RSS {result['peak_rss_mb']:7.0f} MB  mean train loss {result['mean_loss']:.4f}  held-out loss "
                  f"{result['heldout_loss']:.4f}  ({result['tokens']} tokens, "
                  f"{result['steps']} steps)", flush=True)
    keys = ("tokens_per_s", "peak_rss_mb", "mean_loss", "heldout_loss", "runtime_s")
    med = {side: {k: statistics.median(r[k] for r in rs) for k in keys} for side, rs in runs.items()}
    print(f"\n{'side':10s} {'tokens/s':>10s} {'peak RSS MB':>12s} {'train loss':>11s} {'held-out loss':>14s}")
    for side, m in med.items():
        print(f"{side:10s} {m['tokens_per_s']:10.1f} {m['peak_rss_mb']:12.0f} {m['mean_loss']:11.4f} {m['heldout_loss']:14.4f}")
    ratios = {"tokens_per_s": med["tuneserve"]["tokens_per_s"] / med["baseline"]["tokens_per_s"],
              "peak_rss": med["tuneserve"]["peak_rss_mb"] / med["baseline"]["peak_rss_mb"],
              "mean_loss": med["tuneserve"]["mean_loss"] / med["baseline"]["mean_loss"],
              "heldout_loss": med["tuneserve"]["heldout_loss"] / med["baseline"]["heldout_loss"]}
    print(f"ratio tokens/s (tuneserve / baseline): {ratios['tokens_per_s']:.2f}  (goal >= 2.5)")
    print(f"ratio peak RSS (tuneserve / baseline): {ratios['peak_rss']:.2f}  (goal <= 1.0)")
    print(f"ratio mean training loss (tuneserve / baseline): {ratios['mean_loss']:.3f}  (batch order differs)")
    print(f"ratio held-out loss (tuneserve / baseline): {ratios['heldout_loss']:.3f}  (goal: within 2% of 1)")
    print(f"load average at end: {os.getloadavg()[0]:.2f}", flush=True)
    results = {"runs": runs, "medians": med, "ratios": ratios}
    if args.gpu_shapes:
        import torch

        if not torch.cuda.is_available():
            print("--gpu-shapes: no CUDA device here; skipped")
        else:
            peak = matmul_peak_tflops()
            print(f"\nmeasured bf16 matmul peak: {peak:.0f} TFLOP/s")
            results["gpu"] = {"matmul_peak_tflops": peak, "shapes": []}
            for name in GPU_SHAPES:
                r = run_gpu_shape(name, steps=8, seq=2048, batch=4 if name.endswith("1b") else 1)
                r["mfu"] = r["achieved_tflops"] / peak
                results["gpu"]["shapes"].append(r)
                print(f"{name}: {r['tokens_per_s']:.0f} tokens/s, {r['achieved_tflops']:.0f} TFLOP/s, MFU {r['mfu']:.1%}, "
                      f"peak memory {r['peak_memory_gb']:.1f} GB")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
