"""The llama.cpp backend's process manager (inference/llamacpp.py), with a stand-in for llama-cpp-python's server
(fake_llama_cpp/: it answers from its config file, not from a model). What is checked is tuneserve's part: the GGUF
files and the config it writes, restarts when a model comes or goes (after the requests in flight), the 404 where the
real server would silently answer with another model, and OpenAI's default of no repetition penalty. That llama.cpp
itself serves these files is tests/api/test_llamacpp_backend.py's, with the real package."""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import TINY
from tests.unit.test_export import adapter_dir  # noqa: F401  (the fixture: a LoRA adapter with non-zero weights)
from tuneserve.errors import InvalidRequest, NotFound
from tuneserve.inference.llamacpp import LlamaCppServer, check_llama_cpp
from tuneserve.inference.upstream import UpstreamError

FAKE = Path(__file__).parent / "fake_llama_cpp"
CHAT = "/v1/chat/completions"


@pytest.fixture
def server(tmp_path, monkeypatch, tiny_model_ready):
    monkeypatch.setenv("PYTHONPATH", str(FAKE))  # the server's process imports the stand-in as llama_cpp
    upstream = LlamaCppServer(sys.executable, tmp_path / "llamacpp", threads=1)
    yield upstream
    upstream.close()


def ask(server: LlamaCppServer, model: str, **extra) -> dict:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
    return json.loads(server.forward(CHAT, body).json()["choices"][0]["message"]["content"])


def test_a_base_model_is_served_as_gguf_on_first_use(server):
    answer = ask(server, TINY)
    gguf = Path(answer["settings"]["model"])
    assert gguf.parent == server.work_dir / "base" and gguf.read_bytes()[:4] == b"GGUF"
    assert answer["settings"]["model_alias"] == TINY and "lora_path" not in answer["settings"]
    assert answer["repeat_penalty"] == 1.0  # llama-cpp-python's own default is 1.1; OpenAI's API has none
    assert ask(server, TINY, repeat_penalty=1.3)["repeat_penalty"] == 1.3  # a client's own value goes through
    assert [m["id"] for m in server.models()] == [TINY]


def test_a_fine_tuned_adapter_is_its_base_plus_a_lora_gguf(server, adapter_dir):  # noqa: F811
    ask(server, TINY)
    first = server._process
    server.register_adapter("ft:tiny:me:abc", adapter_dir)
    assert server._process is not first and first.poll() is not None  # restarted on the new model list
    answer = ask(server, "ft:tiny:me:abc")
    assert answer["settings"]["model"] == ask(server, TINY)["settings"]["model"]  # the same base GGUF file
    lora = Path(answer["settings"]["lora_path"])
    assert lora.parent == server.work_dir / "lora" and lora.read_bytes()[:4] == b"GGUF"
    # Registering it again changes nothing: no restart.
    running = server._process
    server.register_adapter("ft:tiny:me:abc", adapter_dir)
    assert server._process is running
    config = json.loads((server.work_dir / "config.json").read_text())
    assert [m["model_alias"] for m in config["models"]] == [TINY, "ft:tiny:me:abc"]
    assert config["interrupt_requests"] is False  # else each new request cuts the stream in flight short

    assert server.unregister_adapter("ft:tiny:me:abc") is True
    assert server.unregister_adapter("ft:tiny:me:abc") is False
    with pytest.raises(UpstreamError) as gone:
        ask(server, "ft:tiny:me:abc")
    assert gone.value.status == 404  # not the base's answer, as the real server would give


def test_names_it_cannot_serve_are_clear_errors_not_another_models_answer(server, adapter_dir, tmp_path):  # noqa: F811
    with pytest.raises(UpstreamError) as unknown:
        ask(server, "ft:tiny:me:never-registered")
    assert unknown.value.status == 404 and unknown.value.param == "model"
    with pytest.raises(NotFound):
        ask(server, "no-such/model")
    ia3 = tmp_path / "ia3"
    ia3.mkdir()
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    (ia3 / "adapter_config.json").write_text(json.dumps({**config, "peft_type": "IA3"}))
    (ia3 / "adapter_model.safetensors").write_bytes((adapter_dir / "adapter_model.safetensors").read_bytes())
    with pytest.raises(InvalidRequest, match="LoRA adapters only") as refused:
        server.register_adapter("ft:tiny:me:ia3", ia3)
    assert refused.value.code == "model_not_servable"
    assert server._process is None  # nothing was started for a model it could not serve


def test_a_restart_waits_for_the_stream_in_flight(server, adapter_dir):  # noqa: F811
    ask(server, TINY)
    body = {"model": TINY, "messages": [{"role": "user", "content": "slow"}], "stream": True}
    chunks = server.stream(CHAT, body)  # three chunks, a second apart
    registered = threading.Event()
    started = time.monotonic()
    threading.Thread(target=lambda: (server.register_adapter("ft:tiny:me:abc", adapter_dir), registered.set())).start()
    received = b"".join(chunks)
    assert received.count(b"data: ") == 4 and received.endswith(b"data: [DONE]\n\n")  # whole: not cut by a restart
    assert registered.wait(60)
    assert time.monotonic() - started >= 2  # the restart came after the stream's last chunk
    assert ask(server, "ft:tiny:me:abc")["settings"]["lora_path"]


def test_a_server_that_died_is_started_again_on_the_next_request(server):
    ask(server, TINY)
    first = server._process
    first.kill()
    first.wait()
    assert ask(server, TINY)["settings"]["model_alias"] == TINY  # answered, by a new process
    assert server._process is not first and server._process.poll() is None


def test_start_up_check_names_the_fix(monkeypatch):
    with pytest.raises(RuntimeError, match="cannot run /no/such/python"):
        check_llama_cpp("/no/such/python")
    if importlib.util.find_spec("llama_cpp") is None:
        with pytest.raises(
            RuntimeError, match=r"cannot import llama_cpp.server .*pip install 'llama-cpp-python\[server\]==0.3.36'"
        ):
            check_llama_cpp(sys.executable)
    monkeypatch.setenv("PYTHONPATH", str(FAKE))
    check_llama_cpp(sys.executable)  # an interpreter that has it passes
