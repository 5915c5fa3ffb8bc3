"""Request dependencies: the caller's project (from the API key), and the services app.py put on
app.state, typed. The routes take `jobs: Jobs`, `files: Files`, ...: this is the one module that
reads app.state.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from tuneserve.errors import Unauthorized
from tuneserve.evaluation.service import EvaluationService
from tuneserve.inference.upstream import RuntimeAdapters, Upstream
from tuneserve.jobs.catalog import ModelCatalog
from tuneserve.jobs.service import JobService
from tuneserve.store.files import FileService

if TYPE_CHECKING:
    from tuneserve.inference.engine import Engine

DEFAULT_PROJECT = "default"


def current_project(request: Request) -> str:
    """With no key created, everyone is the default project (the server is loopback-only then).
    Once a key exists, every request needs `Authorization: Bearer <key>`."""
    keys = request.app.state.keys
    if not keys.any():
        return DEFAULT_PROJECT
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Missing API key: send 'Authorization: Bearer <key>'")
    # The evaluation worker calls this server with a short-lived in-memory token of one project (evaluation/worker.py).
    internal = getattr(request.app.state, "internal_tokens", None)
    project = (internal.project_of(token.strip()) if internal is not None else None) or keys.project_of(token.strip())
    if project is None:
        raise Unauthorized("Incorrect API key provided")
    return project


Project = Annotated[str, Depends(current_project)]


class LocalEngine:
    """The in-process inference engine, made on first use: it imports torch, which the API does not
    load to start (and a server proxying to vLLM never loads)."""

    def __init__(self, **options: int) -> None:
        self._options = options  # Engine's knobs, from Settings.engine_options()
        self._engine: Engine | None = None
        self._lock = threading.Lock()

    def get(self) -> Engine:
        with self._lock:
            if self._engine is None:
                from tuneserve.inference.engine import Engine

                self._engine = Engine(**self._options)
            return self._engine

    def unload_adapter(self, adapter_dir: Path) -> None:
        """Stop serving a deleted model's adapter, if the engine was ever made."""
        if self._engine is not None:
            self._engine.unload_adapter(adapter_dir)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()


# The getters are async: a lookup on app.state needs no worker thread.
async def job_service(request: Request) -> JobService:
    return request.app.state.jobs


async def file_service(request: Request) -> FileService:
    return request.app.state.files


async def model_catalog(request: Request) -> ModelCatalog:
    return request.app.state.catalog


async def evaluation_service(request: Request) -> EvaluationService:
    return request.app.state.evaluations


async def runtime_adapters(request: Request) -> RuntimeAdapters:
    return request.app.state.runtime_adapters


async def upstream(request: Request) -> Upstream | None:
    return request.app.state.upstream


async def local_engine(request: Request) -> LocalEngine:
    return request.app.state.engine


Jobs = Annotated[JobService, Depends(job_service)]
Files = Annotated[FileService, Depends(file_service)]
Catalog = Annotated[ModelCatalog, Depends(model_catalog)]
Evaluations = Annotated[EvaluationService, Depends(evaluation_service)]
LoadedAdapters = Annotated[RuntimeAdapters, Depends(runtime_adapters)]  # /v1/load_lora_adapter's
UpstreamServer = Annotated[Upstream | None, Depends(upstream)]  # None unless --inference-backend vllm
LocalInference = Annotated[LocalEngine, Depends(local_engine)]
