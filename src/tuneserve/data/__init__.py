"""Training data: formats in, canonical records out, and the validation report.

Owns: reading files (JSONL, JSON array, Parquet), detecting and normalizing formats to
`Example` / `PreferenceExample` / `TextExample`, validation with line numbers, token statistics,
conversion and preview, and the chat-template rendering and loss masks training uses (formatting.py).
Does not own: training (training/) or storage of uploads (store/).
"""

from pathlib import Path

from tuneserve.data.formats import FORMATS, detect_format, iter_examples, load_examples, scan_records
from tuneserve.data.records import DataError, DataWarning, Example, PreferenceExample, Record, TextExample
from tuneserve.data.validation import LineError, ValidationReport, validate_file


def count_examples(path) -> int:
    """How many examples a file holds (it must be valid)."""
    return sum(1 for _ in iter_examples(Path(path)))


__all__ = [
    "FORMATS",
    "DataError",
    "DataWarning",
    "Example",
    "LineError",
    "PreferenceExample",
    "Record",
    "TextExample",
    "ValidationReport",
    "count_examples",
    "detect_format",
    "iter_examples",
    "load_examples",
    "scan_records",
    "validate_file",
]
