"""The validation report of a training file: format, example count, and errors by line.

Used at upload (a fast check: it reads the file once, no tokenizer) and by `load_examples`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tuneserve.data.formats import detect_format, normalize, read_records, unknown_format_message
from tuneserve.data.records import DataError

MAX_LISTED_ERRORS = 20


@dataclass
class LineError:
    line: int | None
    code: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line is not None else self.message


@dataclass
class ValidationReport:
    format: str | None = None
    n_examples: int = 0
    errors: list[LineError] = field(default_factory=list)  # the first MAX_LISTED_ERRORS
    error_counts: Counter = field(default_factory=Counter)  # every error, by code

    @property
    def ok(self) -> bool:
        return not self.error_counts and self.n_examples > 0

    def add(self, error: DataError) -> None:
        self.error_counts[error.code] += 1
        if len(self.errors) < MAX_LISTED_ERRORS:
            message = str(error).removeprefix(f"line {error.line}: ") if error.line is not None else str(error)
            self.errors.append(LineError(error.line, error.code, message))

    def summary(self) -> str:
        """One sentence for an API error message: the first error and how many more."""
        if self.ok:
            return f"{self.n_examples} examples in {self.format} format"
        if not self.errors:
            return "the file holds no training examples"
        total = sum(self.error_counts.values())
        more = f" ({total - 1} more errors)" if total > 1 else ""
        return f"{self.errors[0]}{more}"

    def as_dict(self) -> dict:
        return {
            "ok": self.ok,
            "format": self.format,
            "n_examples": self.n_examples,
            "errors": [e.__dict__ for e in self.errors],
            "error_counts": dict(self.error_counts),
        }


def validate_file(path: str | Path) -> ValidationReport:
    """Check every record of a file; collect errors instead of stopping at the first.

    File-level problems (empty, binary, not UTF-8, broken JSON) end the scan: nothing after
    them can be trusted.
    """
    report = ValidationReport()
    try:
        for line, record in read_records(Path(path)):
            found = detect_format(record)
            if found is None:
                report.add(DataError(unknown_format_message(record), line=line, code="unknown_format"))
                continue
            if report.format is None:
                report.format = found
            elif found != report.format:
                report.add(DataError(f"record is {found} but the file started as {report.format}", line=line, code="mixed_formats"))
                continue
            try:
                normalize(record, found, line)
                report.n_examples += 1
            except DataError as exc:
                report.add(exc)
    except DataError as exc:
        report.add(exc)
    if report.n_examples == 0 and not report.error_counts:
        report.add(DataError("the file holds no training examples", code="no_examples"))
    return report
