"""The upstream (vLLM) inference backend: an HTTP client for an OpenAI-compatible server that speaks
vLLM's multi-LoRA protocol, and the registry of adapters loaded at runtime through that protocol.

Owns:
- `Upstream`: register / unregister a PEFT adapter directory (`POST /v1/load_lora_adapter`,
  `/v1/unload_lora_adapter`), and forward chat/completions requests, JSON or SSE bytes unchanged.
  Errors of the upstream keep their status and OpenAI envelope (`UpstreamError`); an upstream that
  cannot be reached is a 502 `upstream_unavailable` (`UpstreamUnavailable`).
- `RuntimeAdapters`: the adapters that clients of *this* server registered through the same protocol
  (tuneserve can be the upstream of another tuneserve), by (project, name).
Does not own: deciding what vLLM would refuse (jobs/preflight.py), nor the routes (api/adapters.py).
No torch: httpx only.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import httpx

from tuneserve.errors import TuneserveError

try:  # the lead moves this class into errors.py; until then it lives here
    from tuneserve.errors import UpstreamUnavailable  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - depends on errors.py

    class UpstreamUnavailable(TuneserveError):
        """The upstream inference server cannot be reached (connection refused, reset, timed out)."""

        status = 502
        type = "server_error"
        default_code = "upstream_unavailable"


class UpstreamError(TuneserveError):
    """An error answer of the upstream, passed through: its HTTP status and its error envelope."""

    def __init__(self, status: int, message: str, *, type: str | None = None, param: str | None = None, code: Any = None):
        super().__init__(message, param=param, code=code)
        self.status = status
        self.type = type or ("server_error" if status >= 500 else "invalid_request_error")

    @classmethod
    def from_response(cls, response: httpx.Response, body: bytes) -> "UpstreamError":
        """vLLM answers `{"error": {...}}` (>= 0.9) or a flat `{"object": "error", "message", ...}` (older)."""
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        error = data.get("error") if isinstance(data, dict) else None
        if not isinstance(error, dict):
            error = data if isinstance(data, dict) and "message" in data else None
        if error is None:
            text = body.decode("utf-8", "replace").strip()[:500] or response.reason_phrase
            return cls(response.status_code, f"upstream answered {response.status_code}: {text}", code="upstream_error")
        return cls(
            response.status_code,
            str(error.get("message") or response.reason_phrase),
            type=error.get("type"),
            param=error.get("param"),
            code=error.get("code"),
        )


def _unavailable(base_url: str, exc: Exception) -> UpstreamUnavailable:
    return UpstreamUnavailable(f"The upstream inference server at {base_url} cannot be reached: {type(exc).__name__}: {exc}")


def _already_loaded(response: httpx.Response) -> bool:
    # vLLM: 400 "The lora adapter 'x' has already been loaded." (tuneserve answers the same)
    return response.status_code == 400 and "already been loaded" in response.text


class Upstream:
    """An OpenAI-compatible server with vLLM's runtime LoRA endpoints (vLLM with
    VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, or another tuneserve).

    `base_url` is the server's root (`http://vllm:8000`; a trailing `/v1` is accepted too). Paths given to
    forward/stream are the OpenAI ones (`/v1/chat/completions`). Thread-safe: a sync client for the
    scheduler and sync callers, an async client (made on first use, in the server's loop) for routes.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float = 600,
        *,
        admin_timeout: float = 120,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
    ):
        root = base_url.rstrip("/")
        self.base_url = root[: -len("/v1")] if root.endswith("/v1") else root
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = httpx.Timeout(timeout, connect=10)
        self.admin_timeout = httpx.Timeout(admin_timeout, connect=10)
        self._client = httpx.Client(base_url=self.base_url, headers=self.headers, timeout=self.timeout, transport=transport)
        self._async_transport = async_transport
        self._aclient: httpx.AsyncClient | None = None

    def __repr__(self) -> str:
        return f"Upstream({self.base_url!r})"

    # -- adapters ---------------------------------------------------------------------------
    def register_adapter(self, name: str, path: Path | str) -> None:
        """Load the adapter directory `path` under the model name `name`. Already loaded counts as done.
        The path must be readable by the upstream process (shared storage)."""
        response = self._post("/v1/load_lora_adapter", {"lora_name": name, "lora_path": str(path)}, self.admin_timeout)
        if response.is_success or _already_loaded(response):
            return
        raise UpstreamError.from_response(response, response.content)

    def unregister_adapter(self, name: str) -> bool:
        """Unload `name`; False if the upstream did not have it (404), True if it did."""
        response = self._post("/v1/unload_lora_adapter", {"lora_name": name}, self.admin_timeout)
        if response.status_code == 404:
            return False
        if not response.is_success:
            raise UpstreamError.from_response(response, response.content)
        return True

    def models(self) -> list[dict]:
        """The upstream's /v1/models cards (base models and loaded adapters)."""
        try:
            response = self._client.get("/v1/models", timeout=self.admin_timeout)
        except httpx.TransportError as exc:
            raise _unavailable(self.base_url, exc) from None
        if not response.is_success:
            raise UpstreamError.from_response(response, response.content)
        return list(response.json().get("data", []))

    # -- sync inference ---------------------------------------------------------------------
    def forward(self, path: str, body: dict) -> httpx.Response:
        """POST a JSON request; the 2xx response (body read). UpstreamError / UpstreamUnavailable otherwise."""
        response = self._post(path, body, self.timeout)
        if not response.is_success:
            raise UpstreamError.from_response(response, response.content)
        return response

    def stream(self, path: str, body: dict) -> Iterator[bytes]:
        """POST a streaming request; the SSE bytes as they come, unchanged. The request is sent and its
        status checked here, before iteration, so an error is raised before any byte; closing the
        iterator (or dropping it) closes the upstream connection, which stops its generation."""
        request = self._client.build_request("POST", path, json=body, headers={"Accept": "text/event-stream"})
        try:
            response = self._client.send(request, stream=True)
        except httpx.TransportError as exc:
            raise _unavailable(self.base_url, exc) from None
        if not response.is_success:
            try:
                raise UpstreamError.from_response(response, response.read())
            finally:
                response.close()
        return self._iter(response)

    def _iter(self, response: httpx.Response) -> Iterator[bytes]:
        try:
            yield from response.iter_raw()
        except httpx.TransportError:  # the upstream went away mid-stream: end the stream; the client sees no [DONE]
            return
        finally:
            response.close()

    def _post(self, path: str, body: dict, timeout: httpx.Timeout) -> httpx.Response:
        try:
            return self._client.post(path, json=body, timeout=timeout)
        except httpx.TransportError as exc:
            raise _unavailable(self.base_url, exc) from None

    # -- async inference (for routes: no thread held while the upstream generates) ----------
    def _async(self) -> httpx.AsyncClient:
        if self._aclient is None:
            self._aclient = httpx.AsyncClient(
                base_url=self.base_url,
                headers=self.headers,
                timeout=self.timeout,
                transport=self._async_transport,
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=32),
            )
        return self._aclient

    async def aforward(self, path: str, body: dict) -> httpx.Response:
        try:
            response = await self._async().post(path, json=body)
        except httpx.TransportError as exc:
            raise _unavailable(self.base_url, exc) from None
        if not response.is_success:
            raise UpstreamError.from_response(response, response.content)
        return response

    async def astream(self, path: str, body: dict) -> AsyncIterator[bytes]:
        """As `stream`, async: awaiting it sends the request and checks the status; the returned async
        iterator yields the SSE bytes unchanged and closes the upstream connection when it is closed,
        cancelled (the client went away) or garbage-collected."""
        client = self._async()
        request = client.build_request("POST", path, json=body, headers={"Accept": "text/event-stream"})
        try:
            response = await client.send(request, stream=True)
        except httpx.TransportError as exc:
            raise _unavailable(self.base_url, exc) from None
        if not response.is_success:
            try:
                raise UpstreamError.from_response(response, await response.aread())
            finally:
                await response.aclose()
        return self._aiter(response)

    async def _aiter(self, response: httpx.Response) -> AsyncIterator[bytes]:
        try:
            async for chunk in response.aiter_raw():
                yield chunk
        except httpx.TransportError:
            return
        finally:
            await response.aclose()

    # -- lifecycle --------------------------------------------------------------------------
    def close(self) -> None:
        self._client.close()

    async def aclose(self) -> None:
        self._client.close()
        if self._aclient is not None:
            await self._aclient.aclose()
            self._aclient = None


class RuntimeAdapters:
    """Adapters registered at runtime through vLLM's protocol (`/v1/load_lora_adapter`), per project:
    (project, name) -> (base model reference, adapter directory). In memory, like vLLM's: a restart
    forgets them (the client registers again). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._adapters: dict[tuple[str, str], tuple[str, Path, int]] = {}

    def add(self, project: str, name: str, base: str, path: Path, *, replace: bool = False, created: int = 0) -> bool:
        """Register; False (nothing changed) if the name is taken and `replace` is not set."""
        with self._lock:
            if (project, name) in self._adapters and not replace:
                return False
            self._adapters[(project, name)] = (base, Path(path), created)
            return True

    def remove(self, project: str, name: str) -> bool:
        with self._lock:
            return self._adapters.pop((project, name), None) is not None

    def get(self, project: str, name: str) -> tuple[str, Path] | None:
        """(base, adapter dir) as ModelCatalog.lookup returns them, or None."""
        with self._lock:
            hit = self._adapters.get((project, name))
        return (hit[0], hit[1]) if hit else None

    def list(self, project: str) -> list[dict]:
        """[{"name", "base", "path", "created"}] of the project, in registration order."""
        with self._lock:
            items = [(k[1], v) for k, v in self._adapters.items() if k[0] == project]
        return [{"name": name, "base": base, "path": str(path), "created": created} for name, (base, path, created) in items]
