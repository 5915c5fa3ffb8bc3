"""The llama.cpp inference backend: tuneserve runs llama-cpp-python's OpenAI server as its upstream, and serves the
base models and the fine-tuned LoRA adapters through it, each as GGUF.

Owns `LlamaCppServer`, an `Upstream` (inference/upstream.py: the proxy routes forward to it unchanged) that also
manages the server process:
- A model is served once it is asked for (or, for a fine-tuned one, registered when its job succeeds): a base model
  is written as an f16 GGUF (gguf_export.write_gguf), a fine-tuned one as its base GGUF plus its adapter as a LoRA
  GGUF (gguf_lora.write_lora_gguf), both cached under DATA_DIR/llamacpp/.
- llama-cpp-python's server reads its models from a config file at start, so a new model means a restart (a few
  seconds). Requests in flight finish first; new ones wait for the restart.
- llama-cpp-python answers a model name it does not know with its first model, silently. Requests are checked here
  first: an unknown name is a 404 (and the proxy registers a fine-tuned model of the caller and retries).
- llama-cpp-python defaults `repeat_penalty` to 1.1, where OpenAI's API has no repetition penalty: a request without
  it is sent with 1.0, so greedy answers are the model's own.
Does not own: the routes (api/adapters.py), the GGUF writers, the job catalog.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import AsyncIterator, Iterator

import httpx

from tuneserve.errors import InvalidRequest, NotFound
from tuneserve.inference.upstream import Upstream, UpstreamError, UpstreamUnavailable

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "pip install 'llama-cpp-python[server]==0.3.36' (it compiles llama.cpp: about 17 minutes on 2 cores), "
    "or point TUNESERVE_LLAMA_CPP_PYTHON at a Python that has it"
)


def check_llama_cpp(python: str) -> None:
    """Fail at start, with the fix, when `python` cannot run llama-cpp-python's server."""
    try:
        done = subprocess.run([python, "-c", "import llama_cpp.server.app"], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"inference backend 'llamacpp': cannot run {python}: {exc}. {INSTALL_HINT}") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        raise RuntimeError(f"inference backend 'llamacpp': {python} cannot import llama_cpp.server ({last}). {INSTALL_HINT}")


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _key(*parts: object) -> str:
    return hashlib.sha256("\0".join(map(str, parts)).encode()).hexdigest()[:16]


class LlamaCppServer(Upstream):
    """llama-cpp-python's server on a loopback port, started on the first request and restarted when a model is
    added or removed. Thread-safe; the async routes wait for a restart in a worker thread."""

    def __init__(self, python: str, work_dir: Path, *, threads: int | None = None, n_ctx: int = 2048, host: str = "127.0.0.1"):
        self.host, self.port = host, _free_port(host)
        super().__init__(f"http://{host}:{self.port}")
        self.python, self.work_dir = python, Path(work_dir)
        self.threads, self.n_ctx = threads or os.cpu_count() or 1, n_ctx
        self._models: dict[str, dict] = {}  # alias -> llama-cpp-python's model settings
        self._running: dict[str, dict] = {}  # what the running process serves
        self._process: subprocess.Popen | None = None
        self._state = threading.Condition()
        self._active = 0  # requests in flight
        self._restarting = False

    def __repr__(self) -> str:
        return f"LlamaCppServer({self.python!r}, port {self.port})"

    # -- the models ----------------------------------------------------------------------------
    def _base_gguf(self, base: str) -> Path:
        """The base model as an f16 GGUF, written once."""
        from tuneserve.gguf_export import GGUFError, write_gguf
        from tuneserve.models import ModelNotFound, resolve_model

        try:
            model_dir = resolve_model(base)
        except ModelNotFound as exc:
            raise NotFound(f"The model '{base}' does not exist: {exc}", param="model", code="model_not_found") from None
        out = self.work_dir / "base" / f"{_key(model_dir)}-f16.gguf"
        if not out.is_file():
            try:
                write_gguf(model_dir, out, name=base.rsplit("/", 1)[-1])
            except GGUFError as exc:
                raise InvalidRequest(
                    f"llama.cpp cannot serve '{base}': {exc}", param="model", code="model_not_servable"
                ) from None
        return out

    def _settings(self, alias: str, gguf: Path, lora: Path | None = None) -> dict:
        settings = {"model": str(gguf), "model_alias": alias, "n_ctx": self.n_ctx, "n_threads": self.threads}
        if lora is not None:
            settings["lora_path"] = str(lora)
        return settings

    def add_base(self, base: str) -> None:
        """Serve the base model `base` (a name tuneserve's local backend would accept)."""
        if base in self._models:
            return
        self._change(base, self._settings(base, self._base_gguf(base)))

    def register_adapter(self, name: str, path: Path | str) -> None:
        """Serve the PEFT LoRA adapter directory `path` as the model `name`: its base as GGUF, itself as a LoRA GGUF."""
        from tuneserve.export import ExportError, adapter_base_model, export_lora_gguf

        path = Path(path)
        weights = path / "adapter_model.safetensors"
        if name in self._models and self._models[name].get("source") == str(path):
            return
        try:
            base = adapter_base_model(path)
            lora = self.work_dir / "lora" / f"{_key(path.resolve(), weights.stat().st_mtime_ns)}-f16.gguf"
            if not lora.is_file():
                export_lora_gguf(path, base, lora)
        except (ExportError, OSError) as exc:
            raise InvalidRequest(f"llama.cpp cannot serve '{name}': {exc}", param="model", code="model_not_servable") from None
        self._change(name, {**self._settings(name, self._base_gguf(base), lora), "source": str(path)})

    def unregister_adapter(self, name: str) -> bool:
        if name not in self._models:
            return False
        self._change(name, None)
        return True

    def _change(self, alias: str | None = None, settings: dict | None = None) -> None:
        """Add (or with None remove) a model, then restart the server on the new list once no request is in flight.
        With no alias: only restart, if what runs is not the list (a failed start, or a server that died)."""
        with self._state:
            while self._restarting:
                self._state.wait()
            if alias is not None and settings is None:
                self._models.pop(alias, None)
            elif alias is not None:
                self._models[alias] = settings
            if self._process is not None and self._process.poll() is not None:
                log.warning("llama.cpp's server exited with %s; starting it again", self._process.returncode)
                self._running = {}
            if self._running == self._models:
                return
            self._restarting = True
            if not self._state.wait_for(lambda: self._active == 0, timeout=600):
                log.warning("restarting llama.cpp with %d requests still in flight", self._active)
        try:
            self._restart()
        finally:
            with self._state:
                self._restarting = False
                self._state.notify_all()

    # -- the process --------------------------------------------------------------------------
    def _restart(self) -> None:
        self._stop()
        models = dict(self._models)
        if not models:
            self._running = {}
            return
        self.work_dir.mkdir(parents=True, exist_ok=True)
        config = self.work_dir / "config.json"
        served = [{k: v for k, v in s.items() if k != "source"} for s in models.values()]
        config.write_text(json.dumps({"host": self.host, "port": self.port, "interrupt_requests": False, "models": served}))
        server_log = self.work_dir / "server.log"
        self._process = subprocess.Popen(
            [self.python, "-m", "llama_cpp.server", "--config_file", str(config)],
            stdout=server_log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in tuneserve's terminal is tuneserve's to handle; close() stops this
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                tail = server_log.read_text(errors="replace")[-2000:]
                raise UpstreamUnavailable(f"llama.cpp's server exited with {self._process.returncode}: {tail}")
            try:
                if self._client.get("/v1/models", timeout=2).is_success:
                    self._running = models
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self._stop()
        raise UpstreamUnavailable(f"llama.cpp's server did not answer within 120 s (its log: {server_log})")

    def _stop(self) -> None:
        process, self._process = self._process, None
        self._running = {}
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    # -- requests -----------------------------------------------------------------------------
    def _enter(self, body: dict) -> dict:
        """Wait out a restart and count the request in; the body as llama.cpp gets it. A base model is added on the
        spot; any other name it does not serve is a 404 (llama-cpp-python would answer it with another model)."""
        model = str(body.get("model", ""))
        if model and not model.startswith("ft:") and model not in self._models:
            self.add_base(model)
        if model in self._models:
            self._change()  # starts the server again if its last start failed or it died since
        with self._state:
            while self._restarting:
                self._state.wait()
            if model not in self._running:
                raise UpstreamError(404, f"The model '{model}' does not exist", param="model", code="model_not_found")
            self._active += 1
        return {"repeat_penalty": 1.0, **body}

    def _leave(self) -> None:
        with self._state:
            self._active -= 1
            self._state.notify_all()

    def forward(self, path: str, body: dict) -> httpx.Response:
        body = self._enter(body)
        try:
            return super().forward(path, body)
        finally:
            self._leave()

    def stream(self, path: str, body: dict) -> Iterator[bytes]:
        body = self._enter(body)
        try:
            chunks = super().stream(path, body)
        except BaseException:
            self._leave()
            raise
        return self._counted(chunks)

    def _counted(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        try:
            yield from chunks
        finally:
            self._leave()

    async def aforward(self, path: str, body: dict) -> httpx.Response:
        from starlette.concurrency import run_in_threadpool

        body = await run_in_threadpool(self._enter, body)
        try:
            return await super().aforward(path, body)
        finally:
            self._leave()

    async def astream(self, path: str, body: dict) -> AsyncIterator[bytes]:
        from starlette.concurrency import run_in_threadpool

        body = await run_in_threadpool(self._enter, body)
        try:
            chunks = await super().astream(path, body)
        except BaseException:
            self._leave()
            raise
        return self._acounted(chunks)

    async def _acounted(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        try:
            async for chunk in chunks:
                yield chunk
        finally:
            self._leave()

    # -- lifecycle ----------------------------------------------------------------------------
    def close(self) -> None:
        self._stop()
        super().close()

    async def aclose(self) -> None:
        self._stop()
        await super().aclose()
