"""The evaluation report: per-model aggregates (report.json) and a self-contained page (report.html).

Owns: the summary (per model: n, each metric's mean with its confidence interval, error counts),
the report's JSON shape, and the HTML (answers side by side, an inline SVG chart of the metrics;
no script, no stylesheet or font from anywhere else, so it opens offline and as an attachment).
"""

from __future__ import annotations

import json
import re
import time
from html import escape
from pathlib import Path
from typing import Any

from tuneserve.atomic import write_text_atomically
from tuneserve.evaluation.metrics import CI_METHOD, ROUGE_TYPES, aggregate

METRICS = (*ROUGE_TYPES, "exact_match")
LABELS = {"rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L", "exact_match": "Exact match", "judge_yes": "Judge YES"}
COLORS = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f")


def summarize(results: list[dict[str, Any]], models: list[str], with_judge: bool) -> dict[str, dict[str, Any]]:
    """{MODEL: {n, rouge1: {mean, ci_low, ci_high}, ..., exact_match, [judge_yes], errors, [judge_errors]}}.

    Failed requests count as answers scoring 0 (`errors` says how many); judge YES is the share
    of answers the judge gave a verdict on (`judge_errors` counts the others).
    """
    summary: dict[str, dict[str, Any]] = {}
    for model in models:
        answers = [r["answers"][model] for r in results]
        entry: dict[str, Any] = {"n": len(answers)}
        for metric in METRICS:
            entry[metric] = aggregate([a[metric] for a in answers])
        entry["errors"] = sum(1 for a in answers if a.get("error"))
        if with_judge:
            entry["judge_yes"] = aggregate([float(a["judge"]["verdict"] == "YES") for a in answers if a.get("judge")])
            entry["judge_errors"] = sum(1 for a in answers if not a.get("judge"))
        summary[model] = entry
    return summary


def build_report(results: list[dict[str, Any]], models: list[str], *, dataset: str, settings: dict[str, Any]) -> dict[str, Any]:
    with_judge = bool(settings.get("judge_model"))
    return {
        "object": "evaluation.report",
        "created_at": int(time.time()),
        "dataset": dataset,
        "models": models,
        "n_items": len(results),
        "settings": settings,
        "confidence_interval": CI_METHOD,
        "summary": summarize(results, models, with_judge),
        "items": results,
    }


def write_report(report: dict[str, Any], directory: Path) -> tuple[Path, Path]:
    """Write report.json and report.html into `directory` (each atomically); return their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = directory / "report.json", directory / "report.html"
    for path, text in zip(paths, (json.dumps(report, indent=2, ensure_ascii=False) + "\n", render_html(report))):
        write_text_atomically(path, text)
    return paths


def failed_models(report: dict[str, Any]) -> list[str]:
    """Models whose every answer failed (an unknown model, a refused request): nothing was measured."""
    return [m for m, s in report["summary"].items() if s["n"] and s["errors"] == s["n"]]


# --- HTML ---------------------------------------------------------------------------------------


def render_html(report: dict[str, Any]) -> str:
    models, summary = report["models"], report["summary"]
    metrics = [*METRICS, *(["judge_yes"] if report["settings"].get("judge_model") else [])]
    ci = report["confidence_interval"]
    settings = ", ".join(f"{k}: {v}" for k, v in report["settings"].items() if v is not None)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Evaluation: {escape(report["dataset"])}</title>
<style>{_CSS}</style></head><body>
<h1>Evaluation</h1>
<p class="meta">Dataset <b>{escape(report["dataset"])}</b> · {report["n_items"]} items · {escape(settings)}<br>
Intervals: {int(ci["level"] * 100)}% {escape(ci["method"])} ({ci["resamples"]} resamples of the items).</p>
{_legend(models)}
{_chart(models, summary, metrics)}
<h2>Summary</h2>
{_summary_table(models, summary, metrics)}
<h2>Answers</h2>
{_items_table(models, report["items"])}
</body></html>
"""


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{margin:0 0 4px}h2{margin-top:28px}.meta{color:#555}
table{border-collapse:collapse;width:100%}th,td{border:1px solid #ddd;padding:6px 8px;vertical-align:top;text-align:left}
th{background:#f5f5f5}td.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
.answer{white-space:pre-wrap}.scores{color:#555;font-size:12px;margin-top:4px}
.yes{color:#1a7f37;font-weight:600}.no{color:#c62828;font-weight:600}.err{color:#c62828;font-size:12px}
.legend span{display:inline-block;margin-right:16px}.swatch{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:-1px}
"""


def _legend(models: list[str]) -> str:
    items = "".join(
        f'<span><i class="swatch" style="background:{COLORS[i % len(COLORS)]}"></i>{escape(m)}</span>'
        for i, m in enumerate(models)
    )
    return f'<p class="legend">{items}</p>'


def _chart(models: list[str], summary: dict[str, Any], metrics: list[str]) -> str:
    """Grouped bars (one group per metric, one bar per model) with the confidence interval as whiskers."""
    bar, gap, left, top, height = 22, 28, 44, 12, 220
    group = max(bar * len(models) + gap, 96)  # room for the longest label, "Exact match"
    width = left + group * len(metrics) + 10
    parts = [
        f'<svg role="img" aria-label="metrics by model" width="{width}" height="{top + height + 40}" '
        f'xmlns="http://www.w3.org/2000/svg" font-size="12">'
    ]
    for tick in (0, 0.25, 0.5, 0.75, 1.0):
        y = top + height * (1 - tick)
        parts.append(
            f'<line x1="{left}" x2="{width}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e3e3e3"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#666">{tick:g}</text>'
        )
    for g, metric in enumerate(metrics):
        x0 = left + g * group + (group - bar * len(models)) / 2
        for i, model in enumerate(models):
            stats = summary[model].get(metric) or {}
            if stats.get("mean") is None:
                continue
            x, color = x0 + i * bar, COLORS[i % len(COLORS)]
            y = top + height * (1 - stats["mean"])
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar - 4}" height="{top + height - y:.1f}" fill="{color}">'
                f"<title>{escape(model)} · {LABELS[metric]}: {_interval(stats)}</title></rect>"
            )
            lo, hi = top + height * (1 - stats["ci_low"]), top + height * (1 - stats["ci_high"])
            mid = x + (bar - 4) / 2
            parts.append(
                f'<path d="M{mid:.1f} {lo:.1f}V{hi:.1f}M{mid - 4:.1f} {lo:.1f}h8M{mid - 4:.1f} {hi:.1f}h8" stroke="#333"/>'
            )
        parts.append(
            f'<text x="{x0 + bar * len(models) / 2:.1f}" y="{top + height + 18}" text-anchor="middle">{LABELS[metric]}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _interval(stats: dict[str, Any] | None) -> str:
    if not stats or stats.get("mean") is None:
        return "–"
    return f"{stats['mean']:.3f} [{stats['ci_low']:.3f}, {stats['ci_high']:.3f}]"


def _summary_table(models: list[str], summary: dict[str, Any], metrics: list[str]) -> str:
    head = "".join(f"<th>{LABELS[m]}</th>" for m in metrics)
    rows = "".join(
        f"<tr><td>{escape(model)}</td><td class=num>{summary[model]['n']}</td>"
        + "".join(f"<td class=num>{_interval(summary[model].get(m))}</td>" for m in metrics)
        + f"<td class=num>{summary[model]['errors']}</td></tr>"
        for model in models
    )
    return f"<table><tr><th>Model</th><th>n</th>{head}<th>Failed requests</th></tr>{rows}</table>"


def _items_table(models: list[str], items: list[dict[str, Any]]) -> str:
    head = "".join(f"<th>{escape(m)}</th>" for m in models)
    rows = []
    for item in items:
        cells = "".join(f"<td>{_answer_cell(item['answers'][m])}</td>" for m in models)
        rows.append(
            f"<tr><td class=num>{item['index'] + 1}</td><td class=answer>{escape(item['question'])}</td>"
            f"<td class=answer>{escape(item['reference'])}</td>{cells}</tr>"
        )
    return f"<table><tr><th>#</th><th>Question</th><th>Reference</th>{head}</tr>{''.join(rows)}</table>"


def _answer_cell(answer: dict[str, Any]) -> str:
    # Shown trimmed, runs of blank lines folded (small models pad with newlines); report.json keeps the text as it was.
    text = re.sub(r"\n{3,}", "\n\n", answer["text"].strip())
    parts = [f"<div class=answer>{escape(text)}</div>" if text else "<div class=err>(empty answer)</div>"]
    if answer.get("error"):
        parts.append(f"<div class=err>request failed: {escape(answer['error'])}</div>")
    scores = (
        f"ROUGE-1 {answer['rouge1']:.2f} · ROUGE-2 {answer['rouge2']:.2f} · ROUGE-L {answer['rougeL']:.2f} "
        f"· EM {answer['exact_match']:.0f}"
    )
    judge = answer.get("judge")
    if judge:
        css = "yes" if judge["verdict"] == "YES" else "no"
        scores += f" · judge <span class={css}>{judge['verdict']}</span>: {escape(judge['reason'])}"
    elif answer.get("judge_error"):
        scores += f" · <span class=err>judge: {escape(answer['judge_error'])}</span>"
    parts.append(f"<div class=scores>{scores}</div>")
    return "".join(parts)
