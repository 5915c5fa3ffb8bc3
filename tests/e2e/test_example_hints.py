"""examples/hint_generation runs end to end against a real server, on the tiny model (fast enough for
every CI run): custom-template dataset, upload (replacing an earlier one), fine-tune, wait, generate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY, start_server

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hint_generation"


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_ready):
    srv = start_server(tmp_path_factory.mktemp("hints") / "data", env={"OMP_NUM_THREADS": "1"})  # see test_eval_synth.py
    yield srv
    srv.stop()


def test_hint_generation_example(server, tmp_path):
    client = server.client()
    stale = client.files.create(file=("wikihint.jsonl", b'{"text": "an earlier upload"}\n'), purpose="fine-tune")
    result = subprocess.run(
        [
            sys.executable,
            str(EXAMPLE / "hint_generation.py"),
            "--base-url",
            f"{server.base_url}/v1",
            "--model",
            TINY,
            "--n-epochs",
            "1",
            "--max-tokens",
            "16",
            "--workdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Fine-tuning succeeded." in result.stdout and "Execution time:" in result.stdout
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["status"] == "succeeded" and summary["model"].startswith(f"ft:{TINY}:default:wikihint-finetuned:")

    tests = [json.loads(line) for line in (EXAMPLE / "hints_test.jsonl").read_text().splitlines()]
    assert [r["question"] for r in summary["results"]] == [t["question"] for t in tests]
    assert all(isinstance(r["raw"], str) and isinstance(r["hints"], list) for r in summary["results"])

    # The earlier upload was replaced; the new one is the custom template, one example per triple.
    names = {f.id: f.filename for f in client.files.list().data if f.filename.startswith("wikihint")}
    assert stale.id not in names and names == {summary["file_id"]: "wikihint.jsonl"}
    lines = client.files.content(summary["file_id"]).text.splitlines()
    triples = (EXAMPLE / "hints_train.jsonl").read_text().splitlines()
    assert len(lines) == len(triples)
    text = json.loads(lines[0])["text"]
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant that generates hints")
    assert "<|im_start|>assistant\n1. " in text and text.endswith("<|im_end|>\n")
    job = client.fine_tuning.jobs.retrieve(summary["job_id"])
    assert job.training_file == summary["file_id"] and job.fine_tuned_model == summary["model"]
