"""The validation report, drawn for a person at a terminal (`tuneserve data validate`).

Owns: presentation only. What is checked lives in validation.py, token counts in tokens.py.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from tuneserve.data.validation import ValidationReport


def render_report(path: Path, report: ValidationReport, console: Console | None = None) -> None:
    console = console or Console()
    verdict = "[bold green]OK[/]" if report.ok else "[bold red]CANNOT BE TRAINED ON[/]"
    console.print(f"{path}: {verdict}")
    console.print(
        f"  format {report.format or '?'} ({report.kind or '?'}, {report.container or '?'}), "
        f"{report.n_examples} examples, {report.duplicates} duplicates, "
        f"{report.empty_assistant_turns} empty assistant turns"
    )
    for title, items, counts, style in (
        ("errors", report.errors, report.error_counts, "red"),
        ("warnings", report.warnings, report.warning_counts, "yellow"),
    ):
        if not counts:
            continue
        by_kind = ", ".join(f"{code} x{n}" for code, n in counts.most_common())
        console.print(f"  [{style}]{sum(counts.values())} {title}[/] ({by_kind}); the first {len(items)}:")
        for item in items:
            console.print(f"    [{style}]{item}[/]", markup=True, highlight=False)
    if report.tokens:
        console.print(_token_table(report.tokens))


def _token_table(tokens: dict) -> Table:
    table = Table(title=f"tokens with {tokens.get('model')} (max_seq_length {tokens.get('max_seq_length')})", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    rows = [
        (
            "per example: min / mean / p50 / p95 / max",
            " / ".join(f"{tokens.get(k, 0):,.0f}" for k in ("min", "mean", "p50", "p95", "max")),
        ),
        ("total tokens", f"{tokens.get('total_tokens', 0):,}"),
        ("trained tokens (share)", f"{tokens.get('trained_tokens', 0):,} ({100 * (tokens.get('trained_share') or 0):.1f}%)"),
        ("examples over max_seq_length", f"{tokens.get('over_max_length', 0):,}"),
    ]
    truncation = tokens.get("truncation") or {}
    if truncation:
        rows.append(
            (
                "truncation: tokens cut / examples dropped (no trained token left)",
                f"{truncation.get('tokens_cut', 0):,} / {truncation.get('examples_losing_all_trained', 0):,}",
            )
        )
    rows.append((f"training tokens over {tokens.get('n_epochs')} epochs", f"{tokens.get('estimated_training_tokens', 0):,}"))
    seconds = tokens.get("estimated_time_s")
    pace = tokens.get("throughput_tokens_per_s")
    rows.append(
        (
            "estimated time",
            f"{seconds / 60:.1f} min at {pace:,.0f} tokens/s ({tokens.get('device')})"
            if seconds
            else "unknown: no run of this model measured on this machine yet",
        )
    )
    for name, value in rows:
        table.add_row(name, value)
    return table
