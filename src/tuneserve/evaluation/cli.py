"""`tuneserve eval`: models answer a dataset through an OpenAI-compatible endpoint; the answers are
scored and written as report.json and report.html.

Exit status: 0 when every model was measured; 1 on bad input, an unreachable endpoint, or a model
whose every request failed (the report is still written, with the errors in it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--base-url",
        required=True,
        help="an OpenAI-compatible endpoint, e.g. http://127.0.0.1:8015/v1 (key from $TUNESERVE_API_KEY or $OPENAI_API_KEY)",
    )
    parser.add_argument(
        "--model",
        action="append",
        required=True,
        dest="models",
        help="a model to evaluate; repeat for several (e.g. the base and the fine-tuned model)",
    )
    parser.add_argument(
        "--dataset",
        required=True,
        type=Path,
        help="JSON or JSONL of {question, answer} items, or chat format (the last assistant turn is the reference)",
    )
    parser.add_argument("--output", required=True, type=Path, help="directory for report.json and report.html")
    parser.add_argument("--judge-model", default=None, help="an LLM judge: YES/NO and a reason per answer")
    parser.add_argument(
        "--judge-base-url",
        default=None,
        help="the judge's endpoint (default: --base-url; key from $TUNESERVE_JUDGE_API_KEY, else the same key)",
    )
    parser.add_argument("--judge-max-tokens", type=int, default=64, help="the judge's reply: a verdict and a short reason")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight at once")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--max-items", type=int, default=None, help="use only the first N items")
    parser.add_argument("--retries", type=int, default=5, help="retries per request, with exponential backoff")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per request")


def cmd_eval(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from tuneserve.data.records import DataError
    from tuneserve.evaluation.dataset import load_eval_items
    from tuneserve.llm.endpoint import api_key, make_client
    from tuneserve.evaluation.judge import Judge
    from tuneserve.evaluation.report import build_report, failed_models, write_report
    from tuneserve.evaluation.runner import EndpointUnreachable, run_evaluation

    console = Console(stderr=True)
    if args.judge_base_url and not args.judge_model:
        print("error: --judge-base-url needs --judge-model", file=sys.stderr)
        return 1
    if len(set(args.models)) != len(args.models) or min(args.concurrency, args.max_tokens, args.judge_max_tokens) < 1:
        print("error: the --model values must differ; --concurrency and --max-tokens must be at least 1", file=sys.stderr)
        return 1
    try:
        items = load_eval_items(args.dataset, max_items=args.max_items)
        client = make_client(args.base_url, api_key(), max_retries=args.retries, timeout_s=args.timeout)
        judge = None
        if args.judge_model:
            judge_client = (
                make_client(args.judge_base_url, api_key(judge=True), max_retries=args.retries, timeout_s=args.timeout)
                if args.judge_base_url
                else client
            )
            judge = Judge(judge_client, args.judge_model, max_tokens=args.judge_max_tokens)
    except (DataError, OSError, ValueError) as exc:
        print(f"error: {args.dataset}: {exc}" if isinstance(exc, (DataError, OSError)) else f"error: {exc}", file=sys.stderr)
        return 1

    with Progress(TextColumn("answering"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("answers", total=len(items) * len(args.models))
        try:
            results = run_evaluation(
                items,
                args.models,
                client,
                judge=judge,
                max_tokens=args.max_tokens,
                temperature=args.temperature,
                concurrency=args.concurrency,
                on_progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
        except EndpointUnreachable as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    settings = {
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "judge_model": args.judge_model,
        "concurrency": args.concurrency,
    }
    report = build_report(results, args.models, dataset=args.dataset.name, settings=settings)
    json_path, html_path = write_report(report, args.output)
    _print_summary(console, report)
    failed = failed_models(report)
    for model in failed:
        first = next(r["answers"][model]["error"] for r in results)
        print(f"error: every request to {model} failed, e.g. {first}", file=sys.stderr)
    print(json.dumps({"report_json": str(json_path), "report_html": str(html_path), "summary": report["summary"]}))
    return 1 if failed else 0


def _print_summary(console, report: dict) -> None:
    from rich.table import Table

    from tuneserve.evaluation.report import LABELS, METRICS

    metrics = [*METRICS, *(["judge_yes"] if report["settings"].get("judge_model") else [])]
    table = Table(title=f"{report['n_items']} items; mean [{int(report['confidence_interval']['level'] * 100)}% CI]")
    for column in ("model", *(LABELS[m] for m in metrics), "failed"):
        table.add_column(column)
    for model, entry in report["summary"].items():
        cells = [
            f"{entry[m]['mean']:.3f} [{entry[m]['ci_low']:.2f}, {entry[m]['ci_high']:.2f}]"
            if entry.get(m) and entry[m]["mean"] is not None
            else "–"
            for m in metrics
        ]
        table.add_row(model, *cells, str(entry["errors"]))
    console.print(table)
