"""CPU serving: tuneserve's engine against llama.cpp, both behind an OpenAI-compatible server.

Same model (SmolLM2-135M-Instruct: tuneserve's built-in copy, fp32 in tuneserve's engine as it serves on CPU;
the same weights written as an f16 GGUF by tuneserve's `gguf_export.write_gguf` for llama.cpp), same 8 questions
as serve_batching.py, streamed chat completions, greedy (temperature 0, repeat_penalty 1.0: llama-cpp-python's
server defaults to 1.1), max_tokens 64. The servers listen on 127.0.0.1 only and use the same number of threads
(`--threads`, default 2: OMP_NUM_THREADS for tuneserve's torch, --n_threads/--n_threads_batch for llama.cpp).

- tuneserve: `python -m tuneserve serve` (local_server.py), its own engine with dynamic batching.
- tuneserve+llama.cpp: `tuneserve serve --inference-backend llamacpp`, tuneserve's routes in front of the same
  llama-cpp-python server, which tuneserve runs itself (with os.cpu_count() threads, so compare on a machine where
  that equals `--threads`). What a user gets who picks llama.cpp: the gap to the llama.cpp side is the proxy's cost.
- llama.cpp: llama-cpp-python's `python -m llama_cpp.server` (it needs the `[server]` extras), run by the
  Python in $TUNESERVE_LLAMA_CPP_PYTHON or `--llamacpp-python` (llama.cpp takes long to compile, so it lives in
  its own venv, not in tuneserve's dependencies). Started with `--interrupt_requests False`: by default a new
  request cuts the stream in progress short. That server runs one request at a time (a lock around its one
  `Llama`), so 8 concurrent requests queue there.

At concurrency 1 the 8 questions go one after another, at 8 all at once from 8 threads. Per level and side:
aggregate generated tokens/s (every answer's tokens, counted with the model's tokenizer on the returned text so
that every side is counted alike, over the wall time of the whole level) and time to first token (request
sent to first non-empty content delta; median and p90 over every request of every repeat). The servers stay
up and the sides alternate within each repeat; tokens/s is the median over `--repeat` runs.

    . .venv/bin/activate
    export TUNESERVE_MODEL_CACHE=/tmp/tscache HF_HUB_OFFLINE=1
    TUNESERVE_LLAMA_CPP_PYTHON=/tmp/llamacpp-venv/bin/python python benchmarks/llamacpp_serving.py
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
from serve_batching import MODEL, QUESTIONS

SIDES = ("tuneserve", "llama.cpp", "tuneserve+llama.cpp")


def export_gguf(out: Path) -> Path:
    """The base model as f16 GGUF: `tuneserve export` takes fine-tuned models only, so call its writer directly."""
    from tuneserve.gguf_export import write_gguf
    from tuneserve.models import resolve_model

    return write_gguf(resolve_model(MODEL), out, quant="f16", name="SmolLM2-135M-Instruct")


def start_llamacpp(python: str, gguf: Path, threads: int, log: Path) -> tuple[subprocess.Popen, str]:
    """llama-cpp-python's OpenAI server on a free loopback port; (process, base URL) once /v1/models answers."""

    port = local_server.free_port()
    command = [python, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", MODEL]
    command += ["--host", "127.0.0.1", "--port", str(port), "--n_threads", str(threads), "--n_threads_batch", str(threads)]
    command += ["--n_ctx", "2048", "--interrupt_requests", "False", "--verbose", "False"]
    process = subprocess.Popen(command, stdout=log.open("ab"), stderr=subprocess.STDOUT, env=thread_env(threads))
    url = f"http://127.0.0.1:{port}"
    local_server.wait_until_answers(process, f"{url}/v1/models", log, "llama.cpp server")
    return process, url


def thread_env(threads: int) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}


def stream_chat(url: str, question: str, max_tokens: int, timeout: float) -> tuple[float, str]:
    """(seconds to the first non-empty content delta, the answer) of one streamed chat completion."""
    import httpx

    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": question}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "repeat_penalty": 1.0,  # llama-cpp-python's own field (default 1.1); tuneserve ignores unknown fields
        "stream": True,
    }
    start = time.perf_counter()
    first, parts = None, []
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=timeout) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            for choice in json.loads(line[6:]).get("choices", []):
                text = (choice.get("delta") or {}).get("content")
                if text:
                    first = first if first is not None else time.perf_counter() - start
                    parts.append(text)
    if first is None:
        raise RuntimeError(f"{url}: no content streamed for {question!r}")
    return first, "".join(parts)


def run_level(url: str, concurrency: int, args) -> tuple[float, list[float], list[str]]:
    """(wall seconds, time to first token of each request, answers) for the 8 questions at this concurrency."""
    barrier = threading.Barrier(concurrency)

    def ask(index: int, question: str):
        if concurrency > 1 and index < concurrency:
            barrier.wait()  # the first wave starts together (the pool's threads are created on submit)
        return stream_chat(url, question, args.max_tokens, args.request_timeout)

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(ask, range(len(QUESTIONS)), QUESTIONS))
    return time.perf_counter() - start, [ttft for ttft, _ in results], [text for _, text in results]


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10, method="inclusive")[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llamacpp-python", default=os.environ.get("TUNESERVE_LLAMA_CPP_PYTHON", "python"))
    parser.add_argument("--gguf", type=Path, help="an existing f16 GGUF of the model (default: exported for this run)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--request-timeout", type=float, default=300)
    parser.add_argument("--time-limit", type=float, default=1200, help="no new repeat starts after this many seconds")
    parser.add_argument("--json", help="write the results as JSON here")
    args = parser.parse_args()
    from tokenizers import Tokenizer

    from tuneserve.models import resolve_model

    began = time.monotonic()
    tokenizer = Tokenizer.from_file(str(resolve_model(MODEL) / "tokenizer.json"))
    print(
        f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; {args.threads} threads per server", flush=True
    )
    runs = {(side, level): [] for side in SIDES for level in args.concurrency}  # (tokens/s, ttfts, answers) per repeat
    with tempfile.TemporaryDirectory(prefix="tuneserve-bench-llamacpp-") as tmp:
        work = Path(tmp)
        gguf = args.gguf or export_gguf(work / "SmolLM2-135M-Instruct-f16.gguf")
        servers = {}
        try:
            servers["tuneserve"] = local_server.start_server(work / "data", work / "tuneserve.log", env=thread_env(args.threads))
            servers["llama.cpp"] = start_llamacpp(args.llamacpp_python, gguf, args.threads, work / "llamacpp.log")
            servers["tuneserve+llama.cpp"] = local_server.start_server(
                work / "data-llamacpp",
                work / "tuneserve-llamacpp.log",
                "--inference-backend",
                "llamacpp",
                "--llama-cpp-python",
                args.llamacpp_python,
            )
            for _, url in servers.values():  # loads tuneserve's model, writes the proxied side's GGUF; warms caches
                stream_chat(url, "Hello", 8, args.request_timeout)
            for rep in range(args.repeat):
                if time.monotonic() - began > args.time_limit:
                    print(f"time limit: stopping after {rep} repeats", flush=True)
                    break
                for level in args.concurrency:
                    for side in SIDES:
                        wall, ttfts, answers = run_level(servers[side][1], level, args)
                        tokens = sum(len(tokenizer.encode(a, add_special_tokens=False).ids) for a in answers)
                        runs[side, level].append((tokens / wall, ttfts, answers))
                        print(
                            f"  rep {rep + 1} concurrency {level} {side}: {tokens} tokens in {wall:.2f}s = "
                            f"{tokens / wall:.1f} tokens/s, TTFT median {statistics.median(ttfts):.3f}s",
                            flush=True,
                        )
                        time.sleep(1)  # let the other side's threads go idle
        finally:
            for process, _ in servers.values():
                local_server.stop_server(process)
    report(runs, args)


def report(runs: dict, args) -> None:
    results = {}
    print(f"\nmedians over repeats; TTFT over every request of every repeat; {args.threads} threads per server")
    print("| concurrency | side | tokens/s | TTFT median | TTFT p90 |")
    print("|---|---|---|---|---|")
    for level in args.concurrency:
        for side in SIDES:
            if not runs[side, level]:
                continue
            ttfts = [t for _, run_ttfts, _ in runs[side, level] for t in run_ttfts]
            results[f"{side}@{level}"] = row = {
                "tokens_per_s": statistics.median(rate for rate, _, _ in runs[side, level]),
                "ttft_median_s": statistics.median(ttfts),
                "ttft_p90_s": p90(ttfts),
                "tokens_per_s_runs": [round(rate, 2) for rate, _, _ in runs[side, level]],
            }
            print(f"| {level} | {side} | {row['tokens_per_s']:.1f} | {row['ttft_median_s']:.3f} s | {row['ttft_p90_s']:.3f} s |")
    for level in args.concurrency:
        proxied, direct = results.get(f"tuneserve+llama.cpp@{level}"), results.get(f"llama.cpp@{level}")
        if proxied and direct:
            print(
                f"concurrency {level}: tuneserve+llama.cpp/llama.cpp tokens/s "
                f"{proxied['tokens_per_s'] / direct['tokens_per_s']:.2f}, "
                f"TTFT median {proxied['ttft_median_s'] / direct['ttft_median_s']:.2f} (the proxy's cost)"
            )
        ours, theirs = results.get(f"tuneserve@{level}"), results.get(f"llama.cpp@{level}")
        if ours and theirs:
            same = sum(a == b for a, b in zip(runs["tuneserve", level][0][2], runs["llama.cpp", level][0][2]))
            print(
                f"concurrency {level}: tuneserve/llama.cpp tokens/s {ours['tokens_per_s'] / theirs['tokens_per_s']:.2f}, "
                f"TTFT median {ours['ttft_median_s'] / theirs['ttft_median_s']:.2f}, "
                f"p90 {ours['ttft_p90_s'] / theirs['ttft_p90_s']:.2f}; identical answers {same}/{len(QUESTIONS)} (fp32 vs f16)"
            )
    print(f"load average at end: {os.getloadavg()[0]:.2f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
