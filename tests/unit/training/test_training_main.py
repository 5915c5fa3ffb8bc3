"""`python -m tuneserve.training JOB_DIR` as the scheduler runs it: a real subprocess, exit codes, events."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.training.conftest import make_spec, read_events, tiny_conversations, write_jsonl

pytestmark = pytest.mark.training  # runs a real training loop: not in make test-fast


def run_process(job_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tuneserve.training", str(job_dir)], capture_output=True, text=True, timeout=120)


def test_a_good_job_exits_0_with_a_result(tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", tiny_conversations()[:4])
    job_dir = tmp_path / "job"
    make_spec(data, hyperparameters={"n_epochs": 1}).write(job_dir)

    proc = run_process(job_dir)

    assert proc.returncode == 0, proc.stderr
    events = read_events(job_dir)
    (result,) = [e for e in events if e["type"] == "result"]
    assert result["adapter_path"] == str(job_dir / "final") and result["trained_tokens"] > 0
    assert not [e for e in events if e.get("level") == "error"]
    assert (job_dir / "final" / "adapter_model.safetensors").is_file()


def test_bad_training_data_exits_1_with_an_error_event(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n{not json\n')
    job_dir = tmp_path / "job"
    make_spec(data).write(job_dir)

    proc = run_process(job_dir)

    assert proc.returncode == 1
    assert "Traceback" in proc.stderr
    errors = [e for e in read_events(job_dir) if e["type"] == "message" and e["level"] == "error"]
    assert len(errors) == 1 and errors[0]["message"].startswith("DataError: ")
    assert not (job_dir / "final").exists()


def test_a_missing_spec_is_reported_too(tmp_path):
    proc = run_process(tmp_path / "job")
    assert proc.returncode == 1
    (error,) = read_events(tmp_path / "job")
    assert error["level"] == "error" and error["message"].startswith("FileNotFoundError: ")
