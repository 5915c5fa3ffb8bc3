"""Fixtures for data tests: writers for small JSONL / JSON files in tmp_path, and the real sample
data (LLaMA-Factory's data/ folder, $TUNESERVE_SAMPLE_DATA or shared/data beside the checkout)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

import tuneserve

# The project's sample data lives in shared/ beside the checkout (as in CI's clone).
SAMPLE_DATA = Path(os.environ.get("TUNESERVE_SAMPLE_DATA") or Path(__file__).resolve().parents[4] / "shared" / "data")
PACKAGE_DEMO_DATA = Path(tuneserve.__file__).parent / "demo_data"


@pytest.fixture
def write_jsonl(tmp_path):
    """write_jsonl(records, name=...) -> path: one JSON value per line."""
    def _write(records: list[Any], name: str = "data.jsonl") -> Path:
        path = tmp_path / name
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
        return path
    return _write


@pytest.fixture
def write_json(tmp_path):
    """write_json(value, name=...) -> path: one (pretty-printed) JSON document."""
    def _write(value: Any, name: str = "data.json") -> Path:
        path = tmp_path / name
        path.write_text(json.dumps(value, indent=2), encoding="utf-8")
        return path
    return _write


@pytest.fixture
def write_bytes(tmp_path):
    def _write(data: bytes, name: str = "raw.jsonl") -> Path:
        path = tmp_path / name
        path.write_bytes(data)
        return path
    return _write


@pytest.fixture
def sample_file():
    """sample_file(name) -> path of a file of the shared sample data."""
    def _find(name: str) -> Path:
        for root in (SAMPLE_DATA, PACKAGE_DEMO_DATA):
            if (root / name).exists():
                return root / name
        pytest.skip(f"sample data {name} not found under {SAMPLE_DATA} (set TUNESERVE_SAMPLE_DATA)")
    return _find
