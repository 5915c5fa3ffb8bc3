"""Schemathesis (4.x) against a live server's own OpenAPI document, with every check: no 5xx, answers that
conform to the documented schemas, documented status codes and content types, schema-valid requests
accepted and invalid ones refused, Allow on 405, use after delete, and (with keys) auth never ignored.

The server is seeded with a real file, a finished fine-tuning job and an evaluation, and the fuzzer is given
their ids, so that it reaches the routes' logic rather than their 404s. A fixed seed and a bounded number of
examples per operation keep it inside CI's time; it runs twice: with no keys on loopback, and with keys
required and a valid key given.

The fuzzed server runs with --api-only (on the seeded data dir): the jobs the fuzzer creates are validated and
queued, paused, resumed and cancelled, but never trained, which would take the 2 cores from the API for minutes.

One documented allowance (FUZZ_CONFIG): eight operations that name a file may answer a schema-valid request with
400, because what the file contains (its lines, format or purpose) is checked, which no JSON schema can say, or
413 past the server's upload limit (a setting, not in the schema).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx

from tests.api.test_auth import create_key
from tests.conftest import TINY, chat_jsonl, start_server, wait_for, wait_for_status

EXAMPLES_PER_OPERATION = 15

FUZZ_CONFIG = """
[dictionaries]
files = {{ values = [{files}] }}
models = {{ values = [{models}] }}
jobs = {{ values = ["{job}"] }}
evaluations = {{ values = ["{evaluation}"] }}
answer_lengths = {{ values = [1, 4, 16] }}

[parameters]
# Dictionaries, not fixed values: a fixed id would replace the ids of the stateful phase's own new resources too.
"path.file_id" = {{ dictionary = "files", probability = 0.8 }}
"path.job_id" = {{ dictionary = "jobs", probability = 0.8 }}
"path.evaluation_id" = {{ dictionary = "evaluations", probability = 0.8 }}
"path.model" = "{fine_tuned}"
"query.model" = "{base}"
"body.model" = {{ dictionary = "models", probability = 0.7 }}
"body.training_file" = {{ dictionary = "files", probability = 0.7 }}
"body.dataset_file" = {{ dictionary = "files", probability = 0.7 }}
"body.fine_tuning_job_id" = {{ dictionary = "jobs", probability = 0.7 }}
# Short answers keep the run inside CI's time (a long one is 512 tokens of the tiny model); a max_tokens past the
# model's context is OpenAI's 400 context_length_exceeded, which depends on the model, not on the schema.
"body.max_tokens" = {{ dictionary = "answer_lengths", probability = 1.0 }}
"body.max_completion_tokens" = {{ dictionary = "answer_lengths", probability = 1.0 }}

# Where a schema-valid request may be a 400 (each as OpenAI answers it): the content or purpose of a file it names.
# A fine-tune upload's lines are checked at upload (a bad line is a 400 naming it); a job's training file must be a
# trainable fine-tune file; a preview renders a file's examples; an evaluation's dataset must hold questions and
# answers (POST /v1/fine-tunes is Together's create, and its preview takes SFT files only). Together's multipart
# upload: the file's announced size against the server's limit (413), and the parts against what was received.
# No JSON schema can say what a file contains.
[[operations]]
include-name = [
    "POST /v1/files", "POST /v1/fine_tuning/jobs", "POST /v1/fine-tunes", "GET /v1/files/{{file_id}}/preview", "POST /v1/evaluations",
    "POST /v1/fine-tunes/preview", "POST /v1/files/multipart/initiate", "POST /v1/files/multipart/complete",
]
[operations.checks.positive_data_acceptance]
# 302: POST /v1/files with `file_name` and no `file` is the first step of Together's upload (api/together_files.py).
expected-statuses = ["2XX", 302, 400, 401, 404, 409, 413]
"""


def _seed(server, tmp_path: Path, key: str | None = None) -> str:
    """A training file, a finished job (so checkpoints, a fine-tuned model, a download) and an evaluation."""
    client = server.client(key) if key else server.client()
    train = client.files.create(file=("train.jsonl", chat_jsonl(12)), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=TINY, training_file=train.id, hyperparameters={"n_epochs": 1, "batch_size": 4})
    job = wait_for_status(client, job.id, {"succeeded", "failed"}, timeout_s=240)
    assert job.status == "succeeded", job.error
    qa = "\n".join(json.dumps({"question": f"What is {i} + 1?", "answer": str(i + 1)}) for i in range(3)).encode()
    evals = client.files.create(file=("qa.jsonl", qa), purpose="evals")
    evaluation = client.post(
        "/evaluations", body={"models": [TINY], "dataset_file": evals.id, "max_tokens": 4}, cast_to=dict
    )  # a tuneserve route: the openai client's plain post
    wait_for(lambda: client.get(f"/evaluations/{evaluation['id']}", cast_to=dict)["status"] != "queued", 60, "the evaluation")
    config = FUZZ_CONFIG.format(
        files=", ".join(f'"{f}"' for f in (train.id, evals.id)),
        models=", ".join(f'"{m}"' for m in (TINY, job.fine_tuned_model)),
        job=job.id,
        evaluation=evaluation["id"],
        fine_tuned=job.fine_tuned_model,
        base=TINY,
    )
    path = tmp_path / "schemathesis.toml"
    path.write_text(config + (f'\n[auth.openapi.bearer]\nbearer = "{key}"\n' if key else ""))
    return str(path)


def _fuzz(server, config: str, tmp_path: Path) -> subprocess.CompletedProcess:
    st = Path(sys.executable).with_name("st")
    command = [
        str(st),
        "--config-file",
        config,
        "run",
        f"{server.base_url}/openapi.json",
        "--checks",
        "all",
        "--seed",
        "1",
        "--max-examples",
        str(EXAMPLES_PER_OPERATION),
        "--workers",
        "1",
        "--generation-database",
        "none",
        "--request-timeout",
        "60",
        "--max-response-time",
        "30",
        "--no-color",
        "--report",
        "ndjson",
        "--report-dir",
        str(tmp_path / "report"),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path)


def _assert_clean(run: subprocess.CompletedProcess, server) -> None:
    summary = run.stdout[-6000:]
    assert run.returncode == 0, f"schemathesis found failures (rc {run.returncode}):\n{summary}\n{run.stderr[-2000:]}"
    assert " passed" in run.stdout and "generated" in run.stdout, summary  # it did run the operations
    tracebacks = [line for line in server.log.read_text().splitlines() if line.startswith("Traceback")]
    assert not tracebacks, server.log.read_text()[-4000:]


def _fuzzed_server(tmp_path: Path, key_project: str | None):
    """Seed a server (training the job), then serve the same data dir with --api-only for the fuzzer."""
    data = tmp_path / "data"
    seeding = start_server(data)
    try:
        key = create_key(data, key_project) if key_project else None
        config = _seed(seeding, tmp_path, key)
    finally:
        seeding.stop()
    # Answers without max_tokens are 16 tokens long (512 by default): a fuzzed completion of 8 prompts x n=8 stays short.
    flags = ("--api-only", "--max-upload-bytes", "2000000", "--engine-default-max-tokens", "16")
    return start_server(data, *flags), config, key


def test_schemathesis_finds_nothing_without_keys(tmp_path, tiny_model_ready):
    server, config, _ = _fuzzed_server(tmp_path, None)
    try:
        _assert_clean(_fuzz(server, config, tmp_path), server)
    finally:
        server.stop()


def test_schemathesis_finds_nothing_with_keys_required(tmp_path, tiny_model_ready):
    server, config, key = _fuzzed_server(tmp_path, "fuzz")
    try:
        document = httpx.get(f"{server.base_url}/openapi.json").json()
        assert document["paths"]["/v1/files"]["get"]["security"] == [{"bearer": []}]  # the fuzzer knows auth is required
        _assert_clean(_fuzz(server, config, tmp_path), server)
    finally:
        server.stop()
