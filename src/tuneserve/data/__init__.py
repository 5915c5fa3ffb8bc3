"""Training data: formats in, canonical Examples out, and the validation report.

Owns: reading files, detecting and normalizing formats, validation with line numbers.
Does not own: tokenization (training/formatting.py) or storage of uploads (store/).
"""

from pathlib import Path

from tuneserve.data.formats import FORMATS, iter_examples, load_examples
from tuneserve.data.records import DataError, Example
from tuneserve.data.validation import LineError, ValidationReport, validate_file


def count_examples(path) -> int:
    """How many examples a file holds (it must be valid)."""
    return sum(1 for _ in iter_examples(Path(path)))


__all__ = ["FORMATS", "DataError", "Example", "LineError", "ValidationReport", "count_examples", "iter_examples", "load_examples", "validate_file"]
