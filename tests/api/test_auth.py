"""API keys: once one exists every request needs one, and a key sees only its project."""

import subprocess
import sys

import httpx
import openai
import pytest

from tests.conftest import chat_jsonl, free_port, start_server


def create_key(data_dir, project: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "tuneserve", "keys", "create", "--data-dir", str(data_dir), "--project", project],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out.startswith("ts-")
    return out


@pytest.fixture(scope="module")
def keyed(tmp_path_factory, tiny_model_ready):
    data_dir = tmp_path_factory.mktemp("auth") / "data"
    data_dir.mkdir(parents=True)
    keys = {"alpha": create_key(data_dir, "alpha"), "beta": create_key(data_dir, "beta")}
    srv = start_server(data_dir)
    yield srv, keys
    srv.stop()


def test_requests_without_or_with_wrong_key_are_401(keyed):
    srv, _ = keyed
    response = httpx.get(f"{srv.base_url}/v1/files")
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        srv.client("ts-wrong").files.list()


def test_keys_are_stored_hashed(keyed):
    srv, keys = keyed
    database = (srv.data_dir / "tuneserve.db").read_bytes()
    assert keys["alpha"].encode() not in database


def test_projects_are_isolated(keyed):
    srv, keys = keyed
    alpha, beta = srv.client(keys["alpha"]), srv.client(keys["beta"])
    file = alpha.files.create(file=("a.jsonl", chat_jsonl(12)), purpose="fine-tune")
    job = alpha.fine_tuning.jobs.create(model="tuneserve/tiny-random", training_file=file.id, hyperparameters={"n_epochs": 1})
    assert file.id in [f.id for f in alpha.files.list()]
    assert file.id not in [f.id for f in beta.files.list()]
    with pytest.raises(openai.NotFoundError):
        beta.files.retrieve(file.id)
    with pytest.raises(openai.NotFoundError):
        beta.files.content(file.id)
    with pytest.raises(openai.NotFoundError):
        beta.fine_tuning.jobs.create(model="tuneserve/tiny-random", training_file=file.id)
    with pytest.raises(openai.NotFoundError):
        beta.fine_tuning.jobs.retrieve(job.id)
    with pytest.raises(openai.NotFoundError):
        beta.fine_tuning.jobs.cancel(job.id)
    assert job.id not in [j.id for j in beta.fine_tuning.jobs.list()]
    assert job.organization_id == "alpha"
    alpha.fine_tuning.jobs.cancel(job.id)


def test_refuses_non_loopback_host_without_key(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tuneserve",
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            str(free_port()),
            "--data-dir",
            str(tmp_path / "d"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "refusing to serve" in result.stderr


def test_loopback_without_keys_needs_no_key(tmp_path, tiny_model_ready):
    srv = start_server(tmp_path / "open")
    try:
        assert httpx.get(f"{srv.base_url}/v1/files").status_code == 200
    finally:
        srv.stop()
