"""Fixtures for the data tools (convert, preview): small file writers, the shared sample data, and
the tiny test model's tokenizer (SmolLM2's tokenizer and chat template)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

# The project's sample data lives in shared/ beside the checkout (as in CI's clone).
SAMPLE_DATA = Path(os.environ.get("TUNESERVE_SAMPLE_DATA") or Path(__file__).resolve().parents[4] / "shared" / "data")


def read_jsonl(path: Path) -> list[Any]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture
def write_jsonl(tmp_path):
    """write_jsonl(records, name=...) -> path: one JSON value per line."""
    def _write(records: list[Any], name: str = "data.jsonl") -> Path:
        path = tmp_path / name
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
        return path
    return _write


@pytest.fixture
def sample():
    """sample(name) -> path of a file of the shared sample data (skips when it is absent)."""
    def _find(name: str) -> Path:
        path = SAMPLE_DATA / name
        if not path.exists():
            pytest.skip(f"sample data {path} not found (set TUNESERVE_SAMPLE_DATA)")
        return path
    return _find


@pytest.fixture
def alpaca_demo(sample) -> Path:
    return sample("alpaca_en_demo.json")


@pytest.fixture(scope="session")
def tokenizer():
    from tuneserve.data.preview import load_tokenizer
    from tuneserve.models import TINY_RANDOM

    return load_tokenizer(TINY_RANDOM)
