"""Memory per process of full fine-tuning: FSDP on 2 ranks against one process, in one run.

Both sides fully fine-tune SmolLM2-135M-Instruct (fp32 weights, AdamW) with the same spec, on
the first `--examples` alpaca items, through the training entry point a job runs
(`python -m tuneserve.training JOB_DIR`):
- baseline: one process, which holds every weight, gradient and optimizer state;
- FSDP: 2 ranks over gloo (as 2 GPUs or 2 Ray Train workers would be started), each holding a
  shard of them (tuneserve.training.parallel).

Peak RSS of each process comes from GNU time (`/usr/bin/time -f %M`): the whole process,
interpreter, torch and the load of the base model included. Every process runs with
MALLOC_MMAP_THRESHOLD_=131072, so that freed tensors go back to the system and RSS follows what
is alive (with glibc's default, freed activations and all-gather buffers stay in the heap and
both sides' peaks grow with the steps). The training state of 135M parameters (fp32 weights,
gradients, AdamW's two moments) is 2.2 GB in one process and 1.1 GB per rank with 2.

Reported, as ratios to the one process's peak:
- rank 1: the training state as sharded; the goal is below 0.8;
- rank 0: the same, plus the whole weights and optimizer state it gathers to write each checkpoint
  (host memory; on GPUs this is what keeps the device memory sharded). The goal is below 1.
Both runs' last training loss is printed too (the same data and steps, so they should match).

    . .venv/bin/activate
    export TUNESERVE_MODEL_CACHE=/tmp/tscache
    python benchmarks/fsdp_memory.py                       # 32 examples, batch 4: 8 steps
    python benchmarks/fsdp_memory.py --examples 64 --repeat 2

The 2 ranks share this machine's cores, so no speed is compared here.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
REPO = Path(__file__).resolve().parents[1]
SAMPLE_DATA = REPO / "tests" / "data" / "alpaca_en_demo.json"


def write_spec(job_dir: Path, data: Path, n: int, max_len: int) -> None:
    from tuneserve.training.spec import Hyperparameters, TrainingSpec

    items = json.loads(data.read_text())[:n]
    training_file = job_dir / "train.json"
    job_dir.mkdir(parents=True)
    training_file.write_text(json.dumps(items))
    spec = TrainingSpec(
        model=MODEL,
        training_file=str(training_file),
        training_type="full",
        max_seq_length=max_len,
        hyperparameters=Hyperparameters(n_epochs=1, batch_size=4, learning_rate_multiplier=1.0, learning_rate=1e-5),
        n_checkpoints=1,
        validation_split=0,  # every example trains: no validation pass in the measured run
    )
    spec.write(job_dir)


def run(job_dir: Path, ranks: int) -> dict:
    """Train as `ranks` processes; each one's peak RSS in MB, and the run's last training loss."""
    from tuneserve.jobs.runners.local import free_port, rank_environment

    port = free_port()
    processes = []
    for rank in range(ranks):
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "MALLOC_MMAP_THRESHOLD_": "131072"}
        if ranks > 1:
            env.update(rank_environment(rank, ranks, port))
        rss_file = job_dir / f"rss-rank{rank}.txt"
        command = ["/usr/bin/time", "-o", str(rss_file), "-f", "%M", sys.executable, "-m", "tuneserve.training", str(job_dir)]
        log = open(job_dir / f"rank{rank}.log", "w")
        processes.append((subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT), rss_file))
    for process, _ in processes:
        if process.wait() != 0:
            raise RuntimeError(f"training failed in {job_dir}:\n{(job_dir / 'rank0.log').read_text()[-3000:]}")
    rss = [int(rss_file.read_text().split()[-1]) / 1024 for _, rss_file in processes]
    events = [json.loads(line) for line in (job_dir / "events.jsonl").read_text().splitlines()]
    losses = [e["train_loss"] for e in events if e["type"] == "metrics" and "train_loss" in e]
    return {"peak_rss_mb": rss, "last_loss": losses[-1], "steps": len(losses)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SAMPLE_DATA)
    parser.add_argument("--examples", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument(
        "--max-len", type=int, default=128, help="max_seq_length: short, so that activations do not hide the training state"
    )
    args = parser.parse_args()

    print(
        f"full fine-tuning of {MODEL} on {args.examples} examples of {args.data.name}, batch 4, max_seq_length {args.max_len}",
        flush=True,
    )
    single, fsdp = [], []
    with tempfile.TemporaryDirectory(prefix="tuneserve-fsdp-") as tmp:
        for rep in range(args.repeat):
            for name, ranks, results in (("one process", 1, single), ("FSDP, 2 ranks", 2, fsdp)):
                job_dir = Path(tmp) / f"{rep}-{ranks}"
                write_spec(job_dir, args.data, args.examples, args.max_len)
                result = run(job_dir, ranks)
                results.append(result)
                rss = ", ".join(f"{mb:,.0f}" for mb in result["peak_rss_mb"])
                print(
                    f"  rep {rep + 1} {name:14s}: peak RSS {rss} MB; {result['steps']} steps, last loss {result['last_loss']:.4f}",
                    flush=True,
                )
    base = statistics.median(r["peak_rss_mb"][0] for r in single)
    writer, other = (statistics.median(r["peak_rss_mb"][rank] for r in fsdp) for rank in (0, 1))
    print(f"\npeak RSS (medians): one process {base:,.0f} MB; FSDP rank 0 {writer:,.0f} MB, rank 1 {other:,.0f} MB")
    print(f"ratio peak RSS, FSDP rank 1 / one process: {other / base:.2f}  (goal < 0.8: the sharded training state)")
    print(f"ratio peak RSS, FSDP rank 0 / one process: {writer / base:.2f}  (goal < 1: it also gathers each checkpoint)")
    print(
        f"last training loss: one process {statistics.median(r['last_loss'] for r in single):.4f}, "
        f"FSDP {statistics.median(r['last_loss'] for r in fsdp):.4f}"
    )


if __name__ == "__main__":
    main()
