"""Dynamic batching: 8 concurrent chat requests against the same 8 sent one after another.

Part 1 (server): starts a real `python -m tuneserve serve` on a free port with a fresh data
directory and calls it with the official `openai` client: 8 chat requests (different questions,
max_tokens 64, temperature 0) sent one after another, then the same 8 sent at once from 8
threads. Part 2 (engine, mixed adapters): the server can only call adapters of fine-tuned jobs,
so this part builds two random LoRA adapters on the same base, saves them to a temporary
directory, and drives `Engine` in-process: 4 requests on adapter A and 4 on adapter B, one
after another, then from 8 threads at once (they share decode steps: PEFT mixed-adapter batch).

Each side runs `--repeat` times (default 3), alternating; medians are reported (the machine is
noisy), with the completion tokens, and whether the concurrent answers equal the sequential
ones (greedy: they must). Prints "ratio: X.XX" lines (sequential / concurrent wall time).

    . .venv/bin/activate
    export TUNESERVE_MODEL_CACHE=/tmp/tscache
    python benchmarks/serve_batching.py                 # both parts, SmolLM2-135M-Instruct
    python benchmarks/serve_batching.py --part server   # or --part engine
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import local_server  # this folder: the scripts run as `python benchmarks/NAME.py`

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
QUESTIONS = [
    "Write a short paragraph about the history of the bicycle.",
    "Explain how photosynthesis works in a few sentences.",
    "Describe a typical day in the life of a lighthouse keeper.",
    "Write a short paragraph about why the ocean is salty.",
    "Explain what a computer processor does, in simple words.",
    "Describe the city of Paris to someone who has never been there.",
    "Write a short story about a cat who learns to fly.",
    "Explain why exercise is good for your health.",
]


def start_server(data_dir: Path) -> tuple[subprocess.Popen, str, Path]:
    log = data_dir.parent / "server.log"
    process, url = local_server.start_server(data_dir, log)
    return process, url, log


def measure(calls, repeat: int, label: str) -> dict:
    """Run the calls sequentially and concurrently, alternating, `repeat` times each."""
    seq_times, con_times, seq_tokens, con_tokens = [], [], [], []
    same = True
    for rep in range(repeat):
        start = time.perf_counter()
        sequential = [call() for call in calls]
        seq_times.append(time.perf_counter() - start)
        with ThreadPoolExecutor(len(calls)) as pool:
            barrier = threading.Barrier(len(calls))

            def run(call):
                barrier.wait()  # all start together (the pool's threads are created on submit)
                return call()

            start = time.perf_counter()
            concurrent = list(pool.map(run, calls))
            con_times.append(time.perf_counter() - start)
        seq_tokens.append(sum(tokens for _, tokens in sequential))
        con_tokens.append(sum(tokens for _, tokens in concurrent))
        same &= [text for text, _ in sequential] == [text for text, _ in concurrent]
        print(
            f"  [{label}] rep {rep + 1}: sequential {seq_times[-1]:.2f}s ({seq_tokens[-1]} tokens), "
            f"concurrent {con_times[-1]:.2f}s ({con_tokens[-1]} tokens)",
            flush=True,
        )
    seq, con = statistics.median(seq_times), statistics.median(con_times)
    paired = statistics.median(s / c for s, c in zip(seq_times, con_times))  # each rep's sides ran back to back
    result = {
        "sequential_s": round(seq, 3),
        "concurrent_s": round(con, 3),
        "ratio": round(seq / con, 2),
        "median_of_paired_ratios": round(paired, 2),
        "sequential_runs_s": [round(t, 3) for t in seq_times],
        "concurrent_runs_s": [round(t, 3) for t in con_times],
        "completion_tokens": seq_tokens[0],
        "concurrent_equals_sequential": same,
    }
    print(
        f"{label}: sequential {seq:.2f}s, concurrent {con:.2f}s (medians of {repeat}); "
        f"{seq_tokens[0]} completion tokens; same answers: {same}"
    )
    print(f"ratio: {seq / con:.2f}  ({label}; median of the per-repetition ratios: {paired:.2f})", flush=True)
    return result


def server_part(args, work: Path) -> dict:
    from openai import OpenAI

    process, url, log = start_server(work / "data")
    try:
        client = OpenAI(base_url=f"{url}/v1", api_key="no-key", max_retries=0, timeout=600)

        def ask(question: str):
            def call():
                r = client.chat.completions.create(
                    model=args.model, messages=[{"role": "user", "content": question}], max_tokens=args.max_tokens, temperature=0
                )
                return r.choices[0].message.content, r.usage.completion_tokens

            return call

        ask("Hello")()  # loads the model
        return measure([ask(q) for q in QUESTIONS], args.repeat, "server, 8 chat requests, base model")
    finally:
        local_server.stop_server(process)


def build_adapter(model_path: str, out: Path, seed: int) -> Path:
    """A LoRA adapter with small random lora_B: it changes the answers without wrecking them."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
    peft_model.save_pretrained(out)
    return out


def engine_part(args, work: Path) -> dict:
    from tuneserve.inference.engine import Engine, SamplingParams
    from tuneserve.models import resolve_model

    path = str(resolve_model(args.model))
    adapters = [build_adapter(path, work / "adapter-a", 1), build_adapter(path, work / "adapter-b", 2)]
    engine = Engine()
    params = SamplingParams(temperature=0, max_tokens=args.max_tokens)
    try:

        def ask(question: str, adapter: Path | None):
            def call():
                r = engine.chat(args.model, adapter, [{"role": "user", "content": question}], params)
                return r.text, r.completion_tokens

            return call

        for adapter in adapters:  # loads the base and both adapters
            ask("Hello", adapter)()
        calls = [ask(q, adapters[i % 2]) for i, q in enumerate(QUESTIONS)]  # 4 on A, 4 on B
        result = measure(calls, args.repeat, "engine, 8 chat requests, 4 on adapter A + 4 on adapter B")
        result["max_rows_in_a_batch"] = engine._batcher.max_rows_seen
        return result
    finally:
        engine.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--part", choices=["server", "engine", "both"], default="both")
    parser.add_argument("--json", help="write the results as JSON here")
    args = parser.parse_args()
    # Other processes on a small machine distort CPU timings badly (torch's OpenMP threads spin
    # on a busy core): the load average says whether a run was quiet.
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
    results = {}
    with tempfile.TemporaryDirectory(prefix="tuneserve-bench-batching-") as tmp:
        work = Path(tmp)
        if args.part in ("server", "both"):
            results["server"] = server_part(args, work)
        if args.part in ("engine", "both"):
            results["engine_mixed_adapters"] = engine_part(args, work)
    print(f"load average at end: {os.getloadavg()[0]:.2f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
