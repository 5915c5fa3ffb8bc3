"""/v1/evaluations (a tuneserve extension) against a real `tuneserve serve` on the tiny model, through
the official openai client (its generic get/post) and httpx: evaluations as jobs, the automatic
evaluation of a fine-tuning job, bad input as 4xx, and API keys (the worker's internal token)."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from tests.api.test_auth import create_key
from tests.conftest import TINY, chat_jsonl, start_server, wait_for, wait_for_status

QA = "".join(json.dumps({"question": f"What is the capital of country {i}?", "answer": f"City {i}."}) + "\n" for i in range(3))
TERMINAL = {"succeeded", "failed", "cancelled"}


def post(client, path: str, body: dict | None = None) -> dict:
    return client.post(path, body=body, cast_to=object)


def get(client, path: str, **query) -> dict:
    return client.get(path, cast_to=object, options={"params": query})


def wait_for_evaluation(client, evaluation_id: str, timeout_s: float = 180) -> dict:
    def ended() -> dict | None:
        evaluation = get(client, f"/evaluations/{evaluation_id}")
        return evaluation if evaluation["status"] in TERMINAL else None

    return wait_for(ended, timeout_s, f"evaluation {evaluation_id} to end", interval_s=0.5)


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_ready):
    """A server of this module's own: its fine-tuning job does not queue behind the other API tests' jobs, and
    one torch thread keeps its generation fast on a 2-core machine (see tests/e2e/test_eval_synth.py)."""
    srv = start_server(tmp_path_factory.mktemp("evaluations") / "data", env={"OMP_NUM_THREADS": "1"})
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def qa_file(server):
    return server.client().files.create(file=("qa.jsonl", QA.encode()), purpose="evals")


def test_an_evaluation_runs_as_a_job_with_a_judge(client, server, qa_file):
    created = post(
        client,
        "/evaluations",
        {"models": [TINY], "dataset_file": qa_file.id, "judge_model": TINY, "max_tokens": 8, "metadata": {"run": "api-test"}},
    )
    assert created["object"] == "evaluation" and created["id"].startswith("eval-")
    assert created["status"] in ("queued", "running") and created["progress"]["total"] == 3
    assert created["summary"] is None and created["fine_tuning_job_id"] is None and created["metadata"] == {"run": "api-test"}

    done = wait_for_evaluation(client, created["id"])
    assert done["status"] == "succeeded", done["error"]
    assert done["progress"] == {"done": 3, "total": 3} and done["started_at"] <= done["finished_at"]
    summary = done["summary"][TINY]
    assert summary["n"] == 3 and summary["errors"] == 0
    for metric in ("rouge1", "rouge2", "rougeL", "exact_match"):
        assert 0 <= summary[metric]["ci_low"] <= summary[metric]["mean"] <= summary[metric]["ci_high"] <= 1
    # The random tiny model rarely writes a YES/NO verdict; every answer is either judged or counted as not.
    judged = [i for i in get(client, f"/evaluations/{done['id']}/items")["data"] if i["answers"][TINY]["judge"]]
    assert summary["judge_errors"] + len(judged) == 3 and "judge_yes" in summary

    page = get(client, f"/evaluations/{done['id']}/items", limit=2)
    assert [i["index"] for i in page["data"]] == [0, 1] and page["has_more"]
    assert page["data"][0]["question"] == "What is the capital of country 0?" and page["data"][0]["reference"] == "City 0."
    answer = page["data"][0]["answers"][TINY]
    assert set(answer) >= {"text", "rouge1", "rouge2", "rougeL", "exact_match", "judge"}
    rest = get(client, f"/evaluations/{done['id']}/items", after="1")
    assert [i["index"] for i in rest["data"]] == [2] and not rest["has_more"]

    html = httpx.get(f"{server.base_url}/v1/evaluations/{done['id']}/report.html")
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert "<svg" in html.text and "What is the capital of country 2?" in html.text

    listed = get(client, "/evaluations", limit=1)
    assert listed["object"] == "list" and listed["data"][0]["id"] == done["id"]


def test_a_fine_tuning_job_with_auto_evaluate_is_compared_with_its_base(client, server):
    training = client.files.create(file=("auto-train.jsonl", chat_jsonl(12)), purpose="fine-tune")
    validation = client.files.create(file=("auto-valid.jsonl", chat_jsonl(2)), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model=TINY,
        training_file=training.id,
        validation_file=validation.id,
        hyperparameters={"n_epochs": 1, "batch_size": 4},
        suffix="auto",
        extra_body={"auto_evaluate": True},
    )
    job = wait_for_status(client, job.id, {"succeeded", "failed"}, timeout_s=240)
    assert job.status == "succeeded", job.error

    mine = wait_for(
        lambda: [e for e in get(client, "/evaluations", limit=100)["data"] if e["fine_tuning_job_id"] == job.id],
        30,
        "the succeeded job's evaluation",
    )
    assert len(mine) == 1
    evaluation = wait_for_evaluation(client, mine[0]["id"])
    assert evaluation["status"] == "succeeded", evaluation["error"]
    assert evaluation["models"] == [TINY, job.fine_tuned_model] and evaluation["dataset_file"] == validation.id
    assert set(evaluation["summary"]) == {TINY, job.fine_tuned_model}
    assert all(s["n"] == 2 and s["errors"] == 0 for s in evaluation["summary"].values())
    item = get(client, f"/evaluations/{evaluation['id']}/items")["data"][0]
    assert item["reference"] == "The capital of Zorbia is Quillton." and set(item["answers"]) == {TINY, job.fine_tuned_model}


@pytest.mark.parametrize(
    "body, status, param",
    [
        ({"models": ["nobody/no-such-model"]}, 404, "models[0]"),
        ({"models": []}, 400, "models"),
        ({"models": [TINY], "max_tokens": 0}, 400, "max_tokens"),
        ({"models": [TINY], "temperatur": 0.5}, 400, "temperatur"),
        ({"models": [TINY], "judge_base_url": "http://127.0.0.1:9/v1"}, 400, "judge_model"),
        ({"models": [TINY], "dataset_file": "file-nope"}, 404, "dataset_file"),
    ],
)
def test_bad_requests_are_4xx_naming_the_field(client, qa_file, body, status, param):
    with pytest.raises(openai.APIStatusError) as info:
        post(client, "/evaluations", {"dataset_file": qa_file.id, **body})
    assert info.value.status_code == status
    assert info.value.body["param"] == param and info.value.body["message"]


def test_a_bad_dataset_line_is_named(client):
    bad = client.files.create(file=("bad.jsonl", (QA + '{"question": "no answer"}\n').encode()), purpose="evals")
    with pytest.raises(openai.BadRequestError) as info:
        post(client, "/evaluations", {"models": [TINY], "dataset_file": bad.id})
    assert "line 4" in info.value.body["message"] and info.value.body["param"] == "dataset_file"


def test_cancel_and_what_a_cancelled_or_unknown_evaluation_answers(client, server, qa_file):
    created = post(client, "/evaluations", {"models": [TINY], "dataset_file": qa_file.id, "max_tokens": 64})
    cancelled = post(client, f"/evaluations/{created['id']}/cancel")
    assert cancelled["status"] == "cancelled" and cancelled["finished_at"] is not None
    time.sleep(1.5)  # a worker that had already claimed it stops; the status stays cancelled
    assert get(client, f"/evaluations/{created['id']}")["status"] == "cancelled"
    response = httpx.get(f"{server.base_url}/v1/evaluations/{created['id']}/report.html")
    assert response.status_code == 409 and response.json()["error"]["code"] == "report_not_ready"
    with pytest.raises(openai.NotFoundError):
        get(client, "/evaluations/eval-nope")
    with pytest.raises(openai.NotFoundError):
        post(client, "/evaluations/eval-nope/cancel")


def test_with_api_keys_evaluations_run_and_stay_in_their_project(tmp_path_factory, tiny_model_ready):
    data_dir = tmp_path_factory.mktemp("eval-keys") / "data"
    data_dir.mkdir(parents=True)
    alpha_key, beta_key = create_key(data_dir, "alpha"), create_key(data_dir, "beta")
    srv = start_server(data_dir, env={"OMP_NUM_THREADS": "1"})  # one torch thread: see tests/e2e/test_eval_synth.py
    try:
        alpha, beta = srv.client(alpha_key), srv.client(beta_key)
        file = alpha.files.create(file=("qa.jsonl", QA.encode()), purpose="evals")
        created = post(alpha, "/evaluations", {"models": [TINY], "dataset_file": file.id, "max_tokens": 4})
        # The worker calls the server's own API as project alpha, with a token of its own.
        done = wait_for_evaluation(alpha, created["id"])
        assert done["status"] == "succeeded", done["error"]
        assert done["summary"][TINY]["errors"] == 0
        with pytest.raises(openai.NotFoundError):
            get(beta, f"/evaluations/{created['id']}")
        assert get(beta, "/evaluations")["data"] == []
        with pytest.raises(openai.NotFoundError):
            post(beta, "/evaluations", {"models": [TINY], "dataset_file": file.id})  # alpha's file
        with pytest.raises(openai.AuthenticationError):
            get(srv.client("ts-internal-" + "x" * 43), "/evaluations")
        assert httpx.get(f"{srv.base_url}/v1/evaluations").status_code == 401
    finally:
        srv.stop()
