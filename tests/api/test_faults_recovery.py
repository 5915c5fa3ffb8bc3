"""A real server under faults it must recover from by itself: its PostgreSQL restarted under it, a second
server started on its data dir, and clients that leave mid-stream or mid-upload."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import httpx
import openai
import pytest

from tests.api.private_postgres import private_postgres  # noqa: F401  (fixture)
from tests.conftest import TINY, chat_jsonl, clean_environment, free_port, start_server, wait_for, wait_for_status

# Short polls and heartbeats, so the scheduler and the evaluation worker meet the outage, and recover quickly.
FAST_LOOPS = {"TUNESERVE_POLL_INTERVAL_S": "0.2", "TUNESERVE_HEARTBEAT_INTERVAL_S": "0.5", "TUNESERVE_HEARTBEAT_TIMEOUT_S": "30"}


def assert_database_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json() == {
        "error": {
            "message": "The database is unavailable; try again shortly.",
            "type": "server_error",
            "param": None,
            "code": "database_unavailable",
        }
    }


class Poller(threading.Thread):
    """GETs `urls` in turn until stopped, keeping every answer's status and body: requests in flight
    while the database goes away."""

    def __init__(self, urls: list[str]):
        super().__init__(daemon=True)
        self.urls, self.answers, self.done = urls, [], threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=30) as http:
            while not self.done.is_set():
                for url in self.urls:
                    try:
                        response = http.get(url)
                    except httpx.HTTPError as exc:  # a connection the server dropped: as wrong as a 500
                        self.answers.append((0, repr(exc)))
                    else:
                        self.answers.append((response.status_code, response.text))

    def stop(self) -> list[tuple[int, str]]:
        self.done.set()
        self.join(timeout=60)
        return self.answers


def test_postgres_restarted_under_the_server_is_a_503_then_the_server_serves_again(tmp_path, private_postgres, tiny_model_ready):  # noqa: F811
    server = start_server(tmp_path / "data", "--database-url", private_postgres.url, env=FAST_LOOPS)
    try:
        client = server.client()
        file = client.files.create(file=("t.jsonl", chat_jsonl(12)), purpose="fine-tune")
        qa = "".join(json.dumps({"question": f"Capital of {i}?", "answer": f"City {i}."}) + "\n" for i in range(2))
        qa_file = client.files.create(file=("qa.jsonl", qa.encode()), purpose="evals")
        job = client.fine_tuning.jobs.create(model=TINY, training_file=file.id, hyperparameters={"n_epochs": 1})
        base = f"{server.base_url}/v1"
        poller = Poller([f"{base}/files", f"{base}/fine_tuning/jobs/{job.id}", f"{base}/fine_tuning/jobs/{job.id}/events"])
        poller.start()
        wait_for(lambda: len(poller.answers) >= 3, 30, "the poller's first answers")

        private_postgres.stop("fast")  # the pooled connections are cut under the poller's queries
        wait_for(lambda: any(status != 200 for status, _ in poller.answers), 30, "a request to meet the outage")
        assert_database_unavailable(httpx.get(f"{base}/files"))
        assert_database_unavailable(httpx.get(f"{base}/fine_tuning/jobs/{job.id}"))
        with pytest.raises(openai.APIStatusError) as caught:
            client.files.create(file=("u.jsonl", chat_jsonl(2)), purpose="fine-tune")
        assert caught.value.status_code == 503 and caught.value.code == "database_unavailable"
        assert httpx.get(f"{base}/health_check").status_code == 200  # the process itself is fine

        private_postgres.start()
        answers = poller.stop()
        failed = [(status, body) for status, body in answers if status != 200]
        # Each in OpenAI's envelope: never a 500, nor a dropped connection.
        assert all(status == 503 and json.loads(body)["error"]["code"] == "database_unavailable" for status, body in failed), (
            failed[:3]
        )

        # Served again with no restart: the pool's pre-ping replaced the connections the restart cut.
        assert [f.id for f in client.files.list()] == [qa_file.id, file.id]
        assert client.fine_tuning.jobs.retrieve(job.id).id == job.id
        reply = client.chat.completions.create(model=TINY, messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
        assert reply.choices[0].message.content is not None
        # The scheduler thread outlived the outage: the job it held through it succeeds.
        job = wait_for_status(client, job.id, {"succeeded", "failed"}, timeout_s=180)
        assert job.status == "succeeded", job.error
        # So did the evaluation worker's thread: it claims and runs a new evaluation.
        created = client.post(
            "/evaluations", body={"models": [TINY], "dataset_file": qa_file.id, "max_tokens": 4}, cast_to=object
        )
        evaluation = wait_for(
            lambda: (e := client.get(f"/evaluations/{created['id']}", cast_to=object))["status"] in ("succeeded", "failed") and e,
            120,
            "the evaluation to end",
            interval_s=0.5,
        )
        assert evaluation["status"] == "succeeded", evaluation["error"]
        assert "unhandled error" not in server.log.read_text()
    finally:
        server.stop()


def serve_command(data_dir, *args: str) -> list[str]:
    return [sys.executable, "-m", "tuneserve", "serve", "--port", str(free_port()), "--data-dir", str(data_dir), *args]


def test_a_second_server_on_a_data_dir_is_refused_and_a_killed_ones_lock_does_not_block_a_restart(tmp_path, tiny_model_ready):
    data_dir = tmp_path / "data"
    server = start_server(data_dir)
    try:
        second = subprocess.run(serve_command(data_dir), capture_output=True, text=True, timeout=60, env=clean_environment())
        assert second.returncode == 2
        assert second.stderr.strip().splitlines() == [
            f"error: the data dir {data_dir} is in use by process {server.process.pid}: another `tuneserve serve` runs on it; "
            "stop it first, or serve another --data-dir"
        ]
        # An API-only replica shares the data dir by design (`tuneserve worker` processes run the jobs).
        api_only = start_server(data_dir, "--api-only")
        try:
            file = api_only.client().files.create(file=("t.jsonl", chat_jsonl(2)), purpose="fine-tune")
        finally:
            api_only.stop()
        assert [f.id for f in server.client().files.list()] == [file.id]

        server.kill()  # SIGKILL: the lock file stays, the lock dies with the process
        assert (data_dir / "serve.lock").exists()
        server = start_server(data_dir)
        assert [f.id for f in server.client().files.list()] == [file.id]
    finally:
        server.stop()
