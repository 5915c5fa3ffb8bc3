"""`tuneserve data synthesize`: the command line of synthesis/synthesize.py, with a progress bar.

Exit status: 0 when training data was written; 1 when nothing usable came out (said plainly,
no training file written), or on bad input or an endpoint that refuses or cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_synthesize_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("documents", nargs="+", type=Path, help="PDF, Markdown or text files, or directories of them")
    parser.add_argument(
        "--base-url",
        required=True,
        help="an OpenAI-compatible endpoint, e.g. http://127.0.0.1:8015/v1 (key from $TUNESERVE_API_KEY or $OPENAI_API_KEY)",
    )
    parser.add_argument("--model", required=True, help="the model that writes the Q&A pairs")
    parser.add_argument("--output", required=True, type=Path, help="the training file to write (chat-format JSONL)")
    parser.add_argument("--questions-per-chunk", type=int, default=3)
    parser.add_argument("--curate", action="store_true", help="keep only pairs a judge answers YES to")
    parser.add_argument("--judge-model", default=None, help="the judge for --curate (default: --model)")
    parser.add_argument(
        "--judge-base-url",
        default=None,
        help="the judge's endpoint (default: --base-url; key from $TUNESERVE_JUDGE_API_KEY, else the same key)",
    )
    parser.add_argument("--eval-split", type=float, default=0.0, help="hold out this share as OUTPUT.valid.jsonl")
    parser.add_argument("--seed", type=int, default=0, help="for the held-out split")
    parser.add_argument("--rpm", type=int, default=None, help="at most this many requests per minute")
    parser.add_argument("--tpm", type=int, default=None, help="at most this many tokens (prompt + max_tokens) per minute")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--config", type=Path, default=None, help="prompt templates (YAML); see docs/synthetic-data.md")
    parser.add_argument("--max-tokens", type=int, default=None, help="per generation request (default: 200 per question)")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument(
        "--chunk-tokens",
        type=int,
        default=None,
        help="at most this many document tokens per chunk (default: what the context window leaves)",
    )
    parser.add_argument(
        "--context-window",
        type=int,
        default=None,
        help="the model's context window, where its tokenizer is not available here (default 4096)",
    )
    parser.add_argument("--max-chunks", type=int, default=None, help="use only the first N chunks (to try prompts out)")
    parser.add_argument("--retries", type=int, default=5, help="retries per request, with exponential backoff")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per request")


def cmd_synthesize(args: argparse.Namespace) -> int:
    from rich.console import Console

    from tuneserve.synthesis.documents import DocumentError, token_counter
    from tuneserve.synthesis.synthesize import SynthesisError, SynthOptions, load_prompt_config, synthesize
    from tuneserve.llm.endpoint import api_key, make_client

    console = Console(stderr=True)
    problem = _check(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    try:
        config = load_prompt_config(args.config)
        client = make_client(args.base_url, api_key(), max_retries=args.retries, timeout_s=args.timeout)
        judge = (
            make_client(args.judge_base_url, api_key(judge=True), max_retries=args.retries, timeout_s=args.timeout)
            if args.judge_base_url
            else None
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    counter = token_counter(args.model, args.context_window)
    options = SynthOptions(
        documents=args.documents,
        model=args.model,
        output=args.output,
        questions_per_chunk=args.questions_per_chunk,
        curate=args.curate,
        judge_model=args.judge_model,
        eval_split=args.eval_split,
        seed=args.seed,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        chunk_tokens=args.chunk_tokens,
        max_chunks=args.max_chunks,
        concurrency=args.concurrency,
        rpm=args.rpm,
        tpm=args.tpm,
        config=config,
    )
    console.print(f"token counts: {counter.method}; context window {counter.context_window}")
    try:
        with _progress(console) as on_progress:
            summary = synthesize(options, client, counter, judge_client=judge, on_progress=on_progress)
    except (SynthesisError, DocumentError) as exc:
        print(f"error: {exc} (finished chunks are kept; rerun to resume)", file=sys.stderr)
        return 1
    console.print(summary["message"])
    print(json.dumps(summary))
    return 0 if summary["usable"] else 1


def _check(args: argparse.Namespace) -> str | None:
    if args.questions_per_chunk < 1:
        return "--questions-per-chunk must be at least 1"
    if not 0 <= args.eval_split < 1:
        return "--eval-split must be in [0, 1)"
    for name in ("rpm", "tpm", "max_tokens", "chunk_tokens", "context_window", "max_chunks"):
        value = getattr(args, name)
        if value is not None and value < 1:
            return f"--{name.replace('_', '-')} must be at least 1"
    if args.concurrency < 1:
        return "--concurrency must be at least 1"
    if (args.judge_base_url or args.judge_model) and not args.curate:
        return "--judge-model and --judge-base-url are for --curate"
    return None


class _progress:
    """A rich progress bar per stage (generate, curate), fed by synthesize()'s on_progress."""

    def __init__(self, console):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
        )
        self.tasks: dict[str, int] = {}

    def __enter__(self):
        self.bar.start()
        return self.update

    def update(self, stage: str, done: int, total: int) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.bar.add_task(
                {"generate": "generating Q&A", "curate": "curating"}.get(stage, stage), total=total
            )
        self.bar.update(self.tasks[stage], completed=done, total=total)

    def __exit__(self, *exc):
        self.bar.stop()
        return False
