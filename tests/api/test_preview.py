"""GET /v1/files/{id}/preview (a tuneserve extension) against a real server: upload with the openai
client, preview with httpx; errors in OpenAI's envelope; project-scoped like the other file routes."""

import json

import httpx
import pytest

from tests.api.test_auth import create_key
from tests.conftest import TINY, start_server

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is the capital of Zorbia?"},
    {"role": "assistant", "content": "Quillton."},
]


def chat_file(n: int) -> bytes:
    return "".join(json.dumps({"messages": MESSAGES}) + "\n" for _ in range(n)).encode()


@pytest.fixture(scope="module")
def file_id(server):
    return server.client().files.create(file=("train.jsonl", chat_file(4)), purpose="fine-tune").id


def preview(server, file_id: str, headers: dict | None = None, **params):
    return httpx.get(
        f"{server.base_url}/v1/files/{file_id}/preview", params={"model": TINY, **params}, headers=headers, timeout=60
    )


def test_preview_shows_trained_segments(server, file_id):
    response = preview(server, file_id, n=2)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "list" and body["model"] == TINY and len(body["data"]) == 2
    first = body["data"][0]
    assert first["line"] == 1 and first["truncated"] is False and 0 < first["n_trained"] < first["n_tokens"]
    text = "".join(s["text"] for s in first["segments"])
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is the capital of Zorbia?<|im_end|>\n"
        "<|im_start|>assistant\nQuillton.<|im_end|>\n"
    )
    assert [s["text"] for s in first["segments"] if s["trained"]] == ["Quillton.<|im_end|>"]
    assert len(preview(server, file_id).json()["data"]) == 3  # n defaults to 3


def test_truncation_through_the_api(server, file_id):
    first = preview(server, file_id, n=1, max_seq_length=8).json()["data"][0]
    assert first["truncated"] is True and first["n_tokens"] == 8 and first["n_trained"] == 0


def test_unknown_model_is_404(server, file_id):
    response = preview(server, file_id, model="nobody/no-such-model-xyz")
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "model_not_found" and error["param"] == "model" and error["type"] == "invalid_request_error"


@pytest.mark.parametrize("n", [0, 21, "x"])
def test_n_out_of_range_is_400(server, file_id, n):
    response = preview(server, file_id, n=n)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "n" and response.json()["error"]["code"] == "invalid_value"


def test_model_is_required(server, file_id):
    response = httpx.get(f"{server.base_url}/v1/files/{file_id}/preview")
    assert response.status_code == 400 and response.json()["error"]["param"] == "model"


def test_unknown_file_is_404(server):
    response = preview(server, "file-doesnotexist")
    assert response.status_code == 404 and response.json()["error"]["code"] == "file_not_found"


def test_bad_data_is_400_naming_the_line(server, client):
    """Files of other purposes are not checked at upload; previewing a broken one names the line."""
    data = chat_file(1) + b"{broken\n"
    bad = client.files.create(file=("notes.jsonl", data), purpose="user_data")
    assert preview(server, bad.id, n=1).status_code == 200  # line 2 is never read for n=1
    response = preview(server, bad.id, n=2)
    assert response.status_code == 400
    error = response.json()["error"]
    assert "line 2" in error["message"] and error["code"] == "invalid_json" and error["param"] == "file_id"


def test_documented_in_the_openapi_schema(server):
    schema = httpx.get(f"{server.base_url}/openapi.json").json()
    route = schema["paths"]["/v1/files/{file_id}/preview"]["get"]
    assert "tuneserve extension" in route["description"]
    assert {p["name"] for p in route["parameters"]} >= {"file_id", "model", "n", "max_seq_length"}


def test_another_projects_file_is_404(tmp_path_factory, tiny_model_ready):
    data_dir = tmp_path_factory.mktemp("preview-auth") / "data"
    data_dir.mkdir(parents=True)
    alpha, beta = create_key(data_dir, "alpha"), create_key(data_dir, "beta")
    srv = start_server(data_dir)
    try:
        file = srv.client(alpha).files.create(file=("a.jsonl", chat_file(2)), purpose="fine-tune")
        assert preview(srv, file.id, headers={"Authorization": f"Bearer {alpha}"}, n=1).status_code == 200
        response = preview(srv, file.id, headers={"Authorization": f"Bearer {beta}"}, n=1)
        assert response.status_code == 404 and response.json()["error"]["code"] == "file_not_found"
        assert preview(srv, file.id, n=1).status_code == 401
    finally:
        srv.stop()
