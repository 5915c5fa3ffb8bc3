"""Job fixtures: a JobService over real stores (SQLite tmp file and the real PostgreSQL, a schema per
test), a tmp jobs dir, and the tiny test model found through the model cache (no torch work).

The database fixtures (migrated_engine, sessions, files) come from tests/unit/conftest.py.
"""

from __future__ import annotations

import json

import pytest

from tuneserve.jobs.catalog import ModelCatalog
from tuneserve.jobs.service import JobService


@pytest.fixture(autouse=True)
def _model_env(monkeypatch):
    """Model checks never reach out to the hub in these tests."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def jobs_dir(tmp_path):
    return tmp_path / "data" / "jobs"


@pytest.fixture
def jobs(sessions, files, jobs_dir):
    return JobService(sessions, files, ModelCatalog(sessions, jobs_dir), jobs_dir)


def chat_jsonl(n: int) -> bytes:
    return "".join(
        json.dumps({"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}) + "\n"
        for i in range(n)
    ).encode()


@pytest.fixture
def training_file(files):
    """A valid 91-example chat training file in project `proj`."""
    return files.create_bytes("proj", "train.jsonl", "fine-tune", chat_jsonl(91))
