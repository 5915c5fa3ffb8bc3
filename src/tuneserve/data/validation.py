"""The validation report of a training file: format, counts, errors and warnings by line, token stats.

Owns: `validate_file`, the one function behind upload checks, `tuneserve data validate` and the
job's validating_files step, and the `ValidationReport` it returns. Does not own: the per-record
rules (formats.py) or token statistics (tokens.py, called only when a model is given).

Streaming: one pass over the file keeps only counters, the first 20 errors and warnings, and an
8-byte hash per distinct example (for duplicates), never the records. JSON arrays are the
exception: formats.py loads them whole (they are the small-data container). With `model`, a
second pass streams the valid records into `tokens.token_report`, so the first pass stays cheap.

Errors block training (`ok` is False); warnings do not. Decisions:
- fewer than 10 examples is a warning (`fewer_than_10_examples`), not an error: the file is fine
  for a test or a validation set; OpenAI refuses *jobs* with fewer, and so does job creation.
- exact duplicates (same normalized record) and empty assistant turns are warnings with counts.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from tuneserve.data.formats import ScanState, kind_of, scan_records
from tuneserve.data.records import DataWarning
from tuneserve.data.records import DataError, Example, PreferenceExample, Record, TextExample

MAX_LISTED_ERRORS = 20
MAX_LISTED_WARNINGS = 20
MIN_EXAMPLES = 10  # OpenAI's minimum for a fine-tuning job


# A listed error has the same shape as a warning (line, code, message); one class serves both.
LineError = DataWarning


@dataclass
class ValidationReport:
    format: str | None = None
    n_examples: int = 0
    errors: list[LineError] = field(default_factory=list)  # the first MAX_LISTED_ERRORS
    error_counts: Counter = field(default_factory=Counter)  # every error, by code
    container: str | None = None  # jsonl | json | parquet
    warnings: list[DataWarning] = field(default_factory=list)  # the first MAX_LISTED_WARNINGS
    warning_counts: Counter = field(default_factory=Counter)
    duplicates: int = 0  # examples identical to an earlier one (after normalization)
    empty_assistant_turns: int = 0  # assistant messages with no text and no tool call
    tokens: dict | None = None  # tokens.token_report(...), when a model was given

    @property
    def kind(self) -> str | None:
        """sft | preference | text."""
        return kind_of(self.format)

    @property
    def ok(self) -> bool:
        return not self.error_counts and self.n_examples > 0

    def add(self, error: DataError) -> None:
        self.error_counts[error.code] += 1
        if len(self.errors) < MAX_LISTED_ERRORS:
            message = str(error).removeprefix(f"line {error.line}: ") if error.line is not None else str(error)
            self.errors.append(LineError(error.line, error.code, message))

    def add_warning(self, warning: DataWarning) -> None:
        self.warning_counts[warning.code] += 1
        if len(self.warnings) < MAX_LISTED_WARNINGS:
            self.warnings.append(warning)

    def summary(self) -> str:
        """One sentence for an API message: the counts, or the first error and how many more."""
        if self.ok:
            text = f"{self.n_examples} examples in {self.format} format"
            total = sum(self.warning_counts.values())
            if total:
                text += f"; {total} warning{'s' if total > 1 else ''}, first: {self.warnings[0]}"
            return text
        if not self.errors:
            return "the file holds no training examples"
        total = sum(self.error_counts.values())
        more = f" ({total - 1} more errors)" if total > 1 else ""
        return f"{self.errors[0]}{more}"

    def as_dict(self) -> dict:
        return {
            "ok": self.ok,
            "format": self.format,
            "kind": self.kind,
            "container": self.container,
            "n_examples": self.n_examples,
            "errors": [e.__dict__ for e in self.errors],
            "error_counts": dict(self.error_counts),
            "warnings": [w.__dict__ for w in self.warnings],
            "warning_counts": dict(self.warning_counts),
            "duplicates": self.duplicates,
            "empty_assistant_turns": self.empty_assistant_turns,
            "tokens": self.tokens,
        }


def validate_file(
    path: str | Path,
    *,
    model: str | None = None,
    max_seq_length: int = 1024,
    n_epochs: int | None = None,
    name: str | None = None,
) -> ValidationReport:
    """Check every record of a file; collect errors and warnings instead of stopping at the first.

    `name` is the file name the user gave (uploads are stored under an id), for the extension
    check. File-level problems (empty, binary, not UTF-8, broken JSON) end the scan. With
    `model`, `tokens` holds token statistics of the valid records (a second pass).
    """
    report = ValidationReport()
    state = ScanState()
    first_line: dict[int, int] = {}  # example hash -> the line it first appeared on
    for record in scan_records(path, state=state, on_error=report.add, warn=report.add_warning, name=name):
        report.n_examples += 1
        digest = _digest(record)
        if digest is None:
            pass  # too deeply nested to hash: no duplicate check for this one
        elif digest in first_line:
            report.duplicates += 1
            report.add_warning(DataWarning(record.line, "duplicate_example", f"the same example as line {first_line[digest]}"))
        else:
            first_line[digest] = record.line
        empty = _empty_assistant_turns(record)
        if empty:
            report.empty_assistant_turns += empty
            report.add_warning(
                DataWarning(record.line, "empty_assistant_turn", f"{empty} assistant turn{'s are' if empty > 1 else ' is'} empty")
            )
    del first_line
    report.format, report.container = state.format, state.container
    if report.n_examples == 0 and not report.error_counts:
        report.add(DataError("the file holds no training examples", code="no_examples"))
    if 0 < report.n_examples < MIN_EXAMPLES:
        report.add_warning(
            DataWarning(
                None,
                "fewer_than_10_examples",
                f"only {report.n_examples} example{'s' if report.n_examples > 1 else ''}; a fine-tuning job needs at least {MIN_EXAMPLES}",
            )
        )
    if model is not None and report.n_examples > 0:
        report.tokens = _token_report(path, name, model, max_seq_length, n_epochs, report)
    return report


def _token_report(
    path: str | Path, name: str | None, model: str, max_seq_length: int, n_epochs: int | None, report: ValidationReport
) -> dict | None:
    """Token statistics of the valid records (a second streaming pass); a failure is a warning, not a crash."""
    try:
        from tuneserve.data.tokens import token_report

        valid: Iterator[Record] = scan_records(path, on_error=lambda error: None, name=name)
        return token_report(valid, model, max_seq_length=max_seq_length, n_epochs=n_epochs)
    except Exception as exc:  # a model that cannot be loaded must not hide the data report
        report.add_warning(
            DataWarning(None, "token_report_failed", f"no token statistics for {model}: {type(exc).__name__}: {str(exc)[:300]}")
        )
        return None


def _digest(record: Record) -> int | None:
    """An 8-byte hash of the normalized record (the line number left out).

    repr, not JSON: normalized records are built with their keys in a fixed order, so equal
    records have equal reprs, and repr is twice as fast as a sorted json.dumps.
    """
    if isinstance(record, Example):
        key: Any = ("sft", record.messages, record.tools)
    elif isinstance(record, PreferenceExample):
        key = ("preference", record.prompt, record.chosen, record.rejected, record.tools)
    else:
        key = ("text", record.text)
    try:
        blob = repr(key).encode("utf-8", "backslashreplace")
    except RecursionError:
        return None
    return int.from_bytes(hashlib.blake2b(blob, digest_size=8).digest(), "little")


def _empty_assistant_turns(record: Record) -> int:
    if isinstance(record, TextExample):
        return 0
    messages = record.messages if isinstance(record, Example) else (*record.prompt, record.chosen, record.rejected)
    return sum(1 for m in messages if m["role"] == "assistant" and not m["content"].strip() and not m.get("tool_calls"))
