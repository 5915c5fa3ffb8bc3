"""Fixtures for the data tools (convert, preview): the sample data (from tests/unit/conftest.py) and
the tiny test model's tokenizer (SmolLM2's tokenizer and chat template)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest


def read_jsonl(path: Path) -> list[Any]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture
def sample(sample_file):
    """sample(name) -> path of a file of the shared sample data (tests/unit/conftest.py)."""
    return sample_file


@pytest.fixture
def alpaca_demo(sample) -> Path:
    return sample("alpaca_en_demo.json")
