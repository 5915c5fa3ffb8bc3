"""A real server under faults it must recover from by itself: its PostgreSQL restarted under it, a second
server started on its data dir, and clients that leave mid-stream or mid-upload."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

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


def engine_status(server) -> dict:
    status = httpx.get(f"{server.base_url}/v1/engine/status").json()
    return {"running": status["running_requests"], "waiting": status["waiting_requests"]}


def open_stream(http: httpx.Client, server, max_tokens: int):
    """A streamed chat completion, read up to its first event (the assistant's role): (response, its lines)."""
    body = {"model": TINY, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": max_tokens, "stream": True}
    response = http.send(http.build_request("POST", f"{server.base_url}/v1/chat/completions", json=body), stream=True)
    assert response.status_code == 200, response.read()
    lines = response.iter_lines()
    assert next(line for line in lines if line.startswith("data:"))
    return response, lines


def test_clients_that_leave_a_stream_free_the_engine_at_once(tmp_path, tiny_model_ready):
    """One place in the batch: A generates, B waits for the place. B's client leaves, then A's: each request
    leaves the engine when its client does (B's used to wait for A's 2000 tokens, then generate for no one)."""
    server = start_server(tmp_path / "data", "--engine-max-batch-size", "1")
    try:
        client = server.client()
        client.chat.completions.create(model=TINY, messages=[{"role": "user", "content": "Hi"}], max_tokens=1)  # loaded
        with httpx.Client(timeout=30) as a_http, httpx.Client(timeout=30) as b_http:
            a, a_lines = open_stream(a_http, server, max_tokens=2000)  # tens of seconds of tokens on a CPU
            b, _ = open_stream(b_http, server, max_tokens=2000)
            wait_for(lambda: engine_status(server) == {"running": 1, "waiting": 1}, 10, "A running and B waiting")

            b.close()
            wait_for(lambda: engine_status(server)["waiting"] == 0, 5, "B's request to leave the queue")
            assert engine_status(server) == {"running": 1, "waiting": 0}
            assert json.loads(next(line for line in a_lines if line.startswith("data:")).removeprefix("data: "))["choices"]

            a.close()
            wait_for(lambda: engine_status(server) == {"running": 0, "waiting": 0}, 5, "A's row to leave the batch")
        with httpx.Client(timeout=10) as http:  # the next request has the place at once
            body = {"model": TINY, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
            assert http.post(f"{server.base_url}/v1/chat/completions", json=body).status_code == 200
    finally:
        server.stop()


def open_files_under(pid: int, directory) -> list[str]:
    """The paths of the files process `pid` holds open under `directory` (an unlinked temp file's too)."""
    paths = []
    for fd in (Path("/proc") / str(pid) / "fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith(f"{directory}/"):
            paths.append(target)
    return paths


def test_a_client_that_leaves_mid_upload_leaves_no_file_behind(tmp_path, tiny_model_ready):
    """The upload announces 20 MB and sends 3, then its socket closes: the spooled part (on disk past 1 MB) is
    closed and gone, nothing reached the blob store, no file is listed, and the next upload is stored."""
    spool = tmp_path / "tmp"
    spool.mkdir()
    server = start_server(tmp_path / "data", env={"TMPDIR": str(spool)})
    try:
        boundary = "tuneserve-test-boundary"
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        )
        request = (
            f"POST /v1/files HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {20 * 2**20}\r\n\r\n{head}"
        )
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(request.encode())
            for _ in range(3):
                sock.sendall(b'{"custom_id": "x"}\n' * (2**20 // 19))
            wait_for(lambda: open_files_under(server.process.pid, spool), 10, "the upload to spool to a temporary file")

        wait_for(lambda: not open_files_under(server.process.pid, spool), 10, "the spooled part to be closed")
        assert list(spool.iterdir()) == []
        assert list((server.data_dir / "files" / ".partial").iterdir()) == []
        client = server.client()
        assert client.files.list().data == []
        stored = client.files.create(file=("small.jsonl", b'{"custom_id": "x"}\n'), purpose="batch")
        assert [f.id for f in client.files.list().data] == [stored.id]
    finally:
        server.stop()
