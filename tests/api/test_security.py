"""Security, against real servers: body limits on every route, upload names that never choose a path,
errors that never show a traceback or a server path, keys that never reach logs, events, files or the
console, and a CORS policy that lets no origin in unless the operator names it."""

from __future__ import annotations

import json
import os
import signal
import site
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from tests.api.test_auth import create_key
from tests.conftest import TINY, chat_jsonl, fine_tune_tiny, start_server, training_pids, wait_for, wait_for_status

LIMIT = 64 * 1024  # --max-request-bytes of the open server
UPLOAD_LIMIT = 300_000  # its --max-upload-bytes
MULTIPART_ALLOWANCE = 64 * 1024  # api/limits.py's, on top of the upload limit
CHAT = {"model": TINY, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
# Routes that take JSON, each with a body it accepts (what it answers is not a 413; the job id is unknown: 404).
JSON_ROUTES = {
    "/v1/chat/completions": CHAT,
    "/v1/fine_tuning/jobs": {"model": TINY, "training_file": "file-nothere"},
    "/v1/fine_tuning/jobs/retrieve": {"fine_tuning_job_id": "ftjob-nothere"},
}


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_ready):
    """An open (loopback, keyless) server with small limits and the default CORS policy."""
    data = tmp_path_factory.mktemp("security") / "data"
    srv = start_server(data, "--max-request-bytes", str(LIMIT), "--max-upload-bytes", str(UPLOAD_LIMIT))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def keyed(tmp_path_factory, tiny_model_ready):
    """A server with an API key, logging all it can, that lets one other origin call it."""
    data = tmp_path_factory.mktemp("security-keyed") / "data"
    data.mkdir(parents=True)
    key = create_key(data, "sec")
    srv = start_server(data, "--log-level", "debug", "--cors-origins", "http://app.example")
    yield srv, key
    srv.stop()


def padded(body: dict, size: int) -> bytes:
    """`body` as JSON of exactly `size` bytes (trailing whitespace is valid JSON)."""
    raw = json.dumps(body).encode()
    assert len(raw) <= size
    return raw + b" " * (size - len(raw))


def in_chunks(raw: bytes, size: int = 8192):
    """A generator body: httpx sends it chunked, with no Content-Length."""
    for start in range(0, len(raw), size):
        yield raw[start : start + size]


def post(srv, path: str, content, **headers) -> httpx.Response:
    return httpx.post(
        f"{srv.base_url}{path}", content=content, headers={"content-type": "application/json", **headers}, timeout=60
    )


# -- 1. body limits ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(JSON_ROUTES))
def test_a_json_body_over_the_limit_is_a_413_envelope_with_or_without_content_length(server, path):
    too_big = padded(JSON_ROUTES[path], LIMIT + 1)
    expected = {
        "error": {
            "message": f"the request body is larger than the limit of {LIMIT} bytes",
            "type": "invalid_request_error",
            "param": None,
            "code": "request_too_large",
        }
    }
    for content in (too_big, in_chunks(too_big)):
        response = post(server, path, content)
        chunked = "content-length" not in response.request.headers
        assert chunked == (content is not too_big)
        assert (response.status_code, response.json()) == (413, expected), f"chunked={chunked}"


@pytest.mark.parametrize("path", sorted(JSON_ROUTES))
def test_a_json_body_at_the_limit_is_served(server, path):
    at_limit = padded(JSON_ROUTES[path], LIMIT)
    for content in (at_limit, in_chunks(at_limit)):
        response = post(server, path, content)
        assert response.status_code == (200 if path == "/v1/chat/completions" else 404), response.text
        if path == "/v1/chat/completions":
            assert response.json()["object"] == "chat.completion"


def multipart(filename: bytes, content: bytes, purpose: bytes = b"fine-tune") -> tuple[bytes, str]:
    """A multipart upload written by hand: clients escape odd file names, a hostile one sends them raw."""
    boundary = uuid.uuid4().hex
    body = (
        f"--{boundary}\r\n".encode()
        + b'Content-Disposition: form-data; name="purpose"\r\n\r\n'
        + purpose
        + f"\r\n--{boundary}\r\n".encode()
        + b'Content-Disposition: form-data; name="file"; filename="'
        + filename
        + b'"\r\nContent-Type: application/octet-stream\r\n\r\n'
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def test_a_chunked_upload_over_its_limit_is_file_too_large_and_keeps_nothing(server):
    before = {f["id"] for f in httpx.get(f"{server.base_url}/v1/files").json()["data"]}
    body, content_type = multipart(b"big.jsonl", chat_jsonl(6000))  # ~480 KB: over 300 KB + the multipart allowance
    assert len(body) > UPLOAD_LIMIT + MULTIPART_ALLOWANCE
    response = httpx.post(f"{server.base_url}/v1/files", content=in_chunks(body), headers={"content-type": content_type})
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert response.json()["error"] | {"message": ""} == {
        "message": "",
        "type": "invalid_request_error",
        "param": "file",
        "code": "file_too_large",
    }
    assert {f["id"] for f in httpx.get(f"{server.base_url}/v1/files").json()["data"]} == before
    # Within the limit, a chunked upload is stored whole.
    small, content_type = multipart(b"small.jsonl", chat_jsonl(12))
    stored = httpx.post(f"{server.base_url}/v1/files", content=in_chunks(small, 1000), headers={"content-type": content_type})
    assert stored.status_code == 200 and stored.json()["bytes"] == len(chat_jsonl(12))


def test_the_openapi_document_lists_413_for_every_route(server):
    document = httpx.get(f"{server.base_url}/openapi.json").json()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            assert "413" in operation["responses"], f"{method} {path}"


# -- 2. upload names ---------------------------------------------------------------------------


def test_an_uploaded_file_name_never_chooses_a_path_on_disk(server):
    marker = uuid.uuid4().hex[:12]
    content = chat_jsonl(12)
    names = {
        "traversal": f"../../etc/{marker}-up".encode(),
        "absolute": f"/tmp/{marker}-abs".encode(),
        "nul": f"{marker}-nul\x00.jsonl".encode(),
        "backslashes": f"..\\..\\{marker}-back.jsonl".encode(),
        "long": (marker + "-long" + "n" * 1000)[:1000].encode(),
    }
    files_dir = server.data_dir / "files"
    for what, name in names.items():
        body, content_type = multipart(name, content)
        response = httpx.post(f"{server.base_url}/v1/files", content=body, headers={"content-type": content_type})
        assert response.status_code in (200, 400), f"{what}: {response.status_code} {response.text}"
        if response.status_code == 400:
            assert set(response.json()["error"]) == {"message", "type", "param", "code"}
            continue
        file = response.json()
        # The name is metadata only: its last part, printable, with no separator, at most 255 characters.
        assert not {"/", "\\"} & set(file["filename"]) and 0 < len(file["filename"]) <= 255, what
        assert file["filename"].isprintable(), what  # no NUL (PostgreSQL's text refuses it) nor control characters
        assert (files_dir / file["id"]).read_bytes() == content, what
        assert httpx.get(f"{server.base_url}/v1/files/{file['id']}/content").content == content
    # Nothing anywhere under the test's directory, nor where the names point, is named after them.
    root = server.data_dir.parent
    named = [path for path in root.rglob("*") if marker in path.name]
    assert named == []
    assert not Path(f"/tmp/{marker}-abs").exists()
    assert not (files_dir / f"../../etc/{marker}-up").exists() and not Path(f"/etc/{marker}-up").exists()


# -- 3. errors without tracebacks or paths -------------------------------------------------------


def leaks(text: str, srv) -> list[str]:
    """What a client-facing text shows that it must not: a traceback, or a path of this server."""
    server_paths = {str(srv.data_dir), str(srv.data_dir.resolve()), sys.prefix, *site.getsitepackages()}
    found = [marker for marker in ("Traceback", 'File "') if marker in text]
    return found + [path for path in server_paths if path in text]


def test_error_answers_show_no_traceback_nor_server_path(server, tmp_path):
    base, v1 = server.base_url, f"{server.base_url}/v1"
    client = server.client()
    train = client.files.create(file=("t.jsonl", chat_jsonl(12)), purpose="fine-tune")
    gone = client.files.create(file=("gone.jsonl", chat_jsonl(12)), purpose="fine-tune")
    (server.data_dir / "files" / gone.id).unlink()  # its content lost on disk
    notes = client.files.create(file=("notes.txt", b"not training data\n"), purpose="assistants")
    bad_adapter = tmp_path / "adapter"
    bad_adapter.mkdir()
    (bad_adapter / "adapter_config.json").write_text('{"base_model_name_or_path": "/nowhere/model"}')
    broken_adapter = tmp_path / "broken"
    broken_adapter.mkdir()
    (broken_adapter / "adapter_config.json").write_text("{nope")
    requests = [
        ("POST", f"{v1}/chat/completions", {"content": b"{not json"}),
        ("POST", f"{v1}/chat/completions", {"json": {**CHAT, "model": "no-such-model"}}),
        ("POST", f"{v1}/chat/completions", {"json": {**CHAT, "model": "ft:tiny:default:x:ftjob-nothere"}}),
        ("POST", f"{v1}/chat/completions", {"json": {**CHAT, "max_tokens": 10**9}}),
        ("POST", f"{v1}/completions", {"json": {"model": "/etc", "prompt": "x"}}),
        ("GET", f"{v1}/files/file-nothere", {}),
        ("GET", f"{v1}/files/{gone.id}/content", {}),
        ("GET", f"{v1}/files/{gone.id}/preview", {"params": {"model": TINY}}),
        ("GET", f"{v1}/files/{notes.id}/preview", {"params": {"model": TINY}}),
        ("GET", f"{v1}/files/{train.id}/preview", {"params": {"model": "/etc"}}),
        ("POST", f"{v1}/files", {"files": {"file": ("x.jsonl", b"{nope\n")}, "data": {"purpose": "fine-tune"}}),
        ("POST", f"{v1}/load_lora_adapter", {"json": {"lora_name": "a", "lora_path": "/nowhere/adapter"}}),
        ("POST", f"{v1}/load_lora_adapter", {"json": {"lora_name": "b", "lora_path": str(bad_adapter)}}),
        ("POST", f"{v1}/load_lora_adapter", {"json": {"lora_name": "c", "lora_path": str(broken_adapter)}}),
        ("POST", f"{v1}/load_lora_adapter", {"json": {"lora_name": "d", "lora_path": "../../jobs"}}),
        ("POST", f"{v1}/fine_tuning/jobs", {"json": {"model": TINY, "training_file": "file-nothere"}}),
        ("POST", f"{v1}/fine_tuning/jobs", {"json": {"model": TINY, "training_file": notes.id}}),
        ("POST", f"{v1}/fine_tuning/jobs", {"json": {"model": "/nowhere/model", "training_file": train.id}}),
        ("POST", f"{v1}/fine_tuning/jobs/retrieve", {"json": {"fine_tuning_job_id": "../../etc"}}),
        ("GET", f"{v1}/fine_tuning/jobs/ftjob-nothere/download", {}),
        ("POST", f"{v1}/evaluations", {"json": {"models": [TINY], "dataset_file": gone.id}}),
        ("GET", f"{v1}/models/ft:nothing", {}),
        ("GET", f"{base}/ui/../../../etc/passwd", {}),
        ("GET", f"{base}/ui/%2e%2e/%2e%2e/settings.py", {}),
        ("PUT", f"{v1}/files", {}),
    ]
    answers = []
    for method, url, options in requests:
        response = httpx.request(method, url, timeout=120, **options)
        assert response.status_code >= 400, f"{method} {url}: {response.status_code}"
        assert response.status_code < 500, f"{method} {url}: {response.text}"
        answers.append((f"{method} {url}", response.text))
    # A job on a file whose content is gone fails in validation: its error and events reach the client too.
    job = client.fine_tuning.jobs.create(model=TINY, training_file=gone.id)
    job = wait_for_status(client, job.id, {"failed", "succeeded"}, timeout_s=120)
    assert job.status == "failed"
    answers.append(("the failed job", job.model_dump_json()))
    answers.append(("its events", httpx.get(f"{v1}/fine_tuning/jobs/{job.id}/events").text))
    found = {what: bad for what, text in answers if (bad := leaks(text, server))}
    assert found == {}, "\n".join(f"{what}: {bad}\n  {text[:400]}" for (what, text) in answers if what in found)


def test_a_crashed_training_process_fails_its_job_without_a_traceback(server):
    """The reason a killed run gives is what the client reads: it names the signal, never the stderr's traceback."""
    client = server.client()
    file = client.files.create(file=("long.jsonl", chat_jsonl(64)), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model=TINY, training_file=file.id, hyperparameters={"n_epochs": 50, "batch_size": 1}, suffix="crash"
    )
    wait_for_status(client, job.id, {"running"}, timeout_s=120)
    job_dir = server.data_dir / "jobs" / job.id
    pids = wait_for(lambda: training_pids(job_dir), 60, "the training process")
    wait_for(lambda: (job_dir / "events.jsonl").exists(), 60, "the first event")
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    job = wait_for_status(client, job.id, {"failed"}, timeout_s=60)
    assert "SIGKILL" in job.error.message
    text = job.model_dump_json() + httpx.get(f"{server.base_url}/v1/fine_tuning/jobs/{job.id}/events").text
    assert leaks(text, server) == [], job.error.message


# -- 4. keys ---------------------------------------------------------------------------------


def test_a_key_appears_in_no_log_event_file_or_console_page(keyed):
    srv, key = keyed
    client = srv.client(key)
    job = fine_tune_tiny(client, chat_jsonl(12), "keys")
    chat = client.chat.completions.create(model=job.fine_tuned_model, messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
    assert chat.choices
    client.models.list()
    events = client.fine_tuning.jobs.list_events(job.id, limit=100)
    assert events.data
    # A wrong key that differs from the real one by its last character is not echoed either.
    wrong = key[:-1] + ("x" if key[-1] != "x" else "y")
    assert httpx.get(f"{srv.base_url}/v1/models", headers={"Authorization": f"Bearer {wrong}"}).status_code == 401
    secrets = {key.encode(), wrong.encode()}

    assert not [s for s in secrets if s in srv.log.read_bytes()]
    assert not [s for s in secrets if s.decode() in events.model_dump_json()]
    for path in [p for p in srv.data_dir.rglob("*") if p.is_file()]:  # the DB, events.jsonl, specs, logs, adapters
        assert not [s for s in secrets if s in path.read_bytes()], path
    assert (srv.data_dir / "jobs" / job.id / "events.jsonl").is_file()
    pages = [httpx.get(f"{srv.base_url}/", headers={"Authorization": f"Bearer {key}"}).text]
    ui = Path(__file__).resolve().parents[2] / "src" / "tuneserve" / "ui"
    for asset in [p for p in ui.rglob("*") if p.is_file() and p.suffix in (".html", ".js", ".css")]:
        response = httpx.get(f"{srv.base_url}/ui/{asset.relative_to(ui).as_posix()}", headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 200, asset
        pages.append(response.text)
    assert len(pages) > 3 and not [page for page in pages if key in page or wrong in page]


# -- 5. CORS ---------------------------------------------------------------------------------


def preflight(srv, origin: str) -> httpx.Response:
    headers = {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    return httpx.options(f"{srv.base_url}/v1/chat/completions", headers=headers)


def test_by_default_no_other_origin_may_call_the_api(server):
    response = preflight(server, "http://evil.example")
    assert "access-control-allow-origin" not in response.headers
    simple = httpx.get(f"{server.base_url}/v1/models", headers={"Origin": "http://evil.example"})
    assert simple.status_code == 200 and "access-control-allow-origin" not in simple.headers


def test_an_origin_the_operator_lists_may_call_the_api_and_no_other(keyed):
    srv, key = keyed
    allowed = preflight(srv, "http://app.example")
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "http://app.example"
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-credentials" not in allowed.headers  # bearer keys, never cookies
    call = httpx.get(f"{srv.base_url}/v1/models", headers={"Origin": "http://app.example", "Authorization": f"Bearer {key}"})
    assert call.status_code == 200 and call.headers["access-control-allow-origin"] == "http://app.example"
    assert "access-control-allow-origin" not in preflight(srv, "http://evil.example").headers
    other = httpx.get(f"{srv.base_url}/v1/models", headers={"Origin": "http://evil.example", "Authorization": f"Bearer {key}"})
    assert "access-control-allow-origin" not in other.headers
