"""build_app(settings): puts the store, the job services, the scheduler and the inference
engine on app.state, once (the routes get them through api/deps.py), and maps every error to
OpenAI's envelope, once."""

from __future__ import annotations

import copy
import logging
import re
import sys
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from tuneserve import __version__
from tuneserve.api import adapters, console, downloads, files, fine_tuning, inference, models, opea, together
from tuneserve.api import evaluations as evaluations_api
from tuneserve.api.deps import LocalEngine
from tuneserve.api.responses import error_body
from tuneserve.api.limits import TOO_LARGE_RESPONSE, BodyLimit
from tuneserve.data import validate_file
from tuneserve.errors import TuneserveError
from tuneserve.evaluation.service import EvaluationService
from tuneserve.evaluation.worker import EvaluationWorker, InternalTokens, self_base_url
from tuneserve.inference.upstream import RuntimeAdapters, Upstream
from tuneserve.jobs.catalog import ModelCatalog
from tuneserve.jobs.scheduler import Scheduler
from tuneserve.jobs.service import JobService
from tuneserve.jobs.worker import runner_from
from tuneserve.settings import Settings
from tuneserve.store.blobs import BlobStore
from tuneserve.store.db import database_unavailable, make_engine, make_sessionmaker, migrate
from tuneserve.store.files import FileService
from tuneserve.store.keys import KeyService

log = logging.getLogger("tuneserve")


# Parts of a pydantic error location that are not field names: the request part and union member tags.
_LOC_NOISE = {
    "body",
    "query",
    "path",
    "header",
    "form",
    "int",
    "float",
    "str",
    "bool",
    "none",
    "constrained-int",
    "constrained-float",
}


def _openapi_without_422(app: FastAPI) -> dict:
    """FastAPI's document, less the 422 it lists for every route with parameters: a request that fails
    validation is answered 400 in OpenAI's envelope (validation_error below), which the routes document."""
    if app.openapi_schema is None:
        schema = FastAPI.openapi(app)
        for operations in schema["paths"].values():
            for operation in operations.values():
                operation.get("responses", {}).pop("422", None)
        for name in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(name, None)
        schema.setdefault("components", {})["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "an API key of `tuneserve keys create`"}
        }
    return app.openapi_schema


def _openapi(app: FastAPI) -> dict:
    """The document as the server is now: once an API key exists, every route that answers 401 requires a bearer
    key (`security`); with none, no route does (loopback only). Clients and fuzzers read auth from it."""
    schema = _openapi_without_422(app)
    keys = getattr(app.state, "keys", None)
    if keys is None or not keys.any():
        return schema
    keyed = copy.deepcopy(schema)
    for operations in keyed["paths"].values():
        for operation in operations.values():
            if "401" in operation.get("responses", {}):
                operation["security"] = [{"bearer": []}]
    return keyed


def documented_methods(app: FastAPI, path: str) -> list[str]:
    """The methods the OpenAPI document lists for `path`, by its most specific entry: a literal path's own
    (/v1/fine_tuning/jobs/retrieve is OPEA's POST, not a job id), else the template with the most literal
    text that matches, a parameter taking slashes too (/v1/models/{model} serves `org/name` models)."""
    paths = _openapi_without_422(app)["paths"]
    matches = [template for template in paths if re.fullmatch(re.sub(r"\\\{[^}]*\\\}", ".+", re.escape(template)), path)]
    if not matches:
        return []
    best = max(matches, key=lambda template: len(re.sub(r"\{[^}]*\}", "", template)))
    return sorted(method.upper() for method in paths[best])


def build_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state = app.state
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        db = make_engine(settings.db_url)
        migrate(db)
        sessions = make_sessionmaker(db)
        jobs_dir = settings.data_dir / "jobs"
        jobs_dir.mkdir(exist_ok=True)
        state.settings = settings
        state.keys = KeyService(sessions)
        state.files = FileService(
            sessions, BlobStore(settings.data_dir / "files"), settings.max_upload_bytes, check=validate_file
        )
        state.runtime_adapters = RuntimeAdapters()
        state.catalog = ModelCatalog(sessions, jobs_dir, runtime=state.runtime_adapters)
        state.upstream, preflight = None, None
        if settings.inference_backend == "vllm":
            from functools import partial

            from tuneserve.jobs.preflight import check_spec_for_vllm

            key = settings.vllm_api_key.get_secret_value() if settings.vllm_api_key else None
            state.upstream = Upstream(settings.vllm_url, api_key=key)
            preflight = partial(check_spec_for_vllm, max_lora_rank=settings.vllm_max_lora_rank)
        elif settings.inference_backend == "llamacpp":
            from tuneserve.inference.llamacpp import LlamaCppServer

            state.upstream = LlamaCppServer(settings.llama_cpp_python or sys.executable, settings.data_dir / "llamacpp")
        state.jobs = JobService(sessions, state.files, state.catalog, jobs_dir, preflight=preflight)
        state.engine = LocalEngine(**settings.engine_options())
        # With --api-only no job runs here (`tuneserve worker` processes run them), so no runner is built.
        state.scheduler = Scheduler(
            sessions,
            state.files,
            jobs_dir,
            max_concurrent=settings.max_concurrent_jobs,
            poll_interval_s=settings.poll_interval_s,
            upstream=state.upstream,
            runner=runner_from(settings) if settings.run_scheduler else None,
            heartbeat_interval_s=settings.heartbeat_every_s,
            heartbeat_timeout_s=settings.heartbeat_timeout_s,
        )
        if settings.run_scheduler:
            state.scheduler.start()
        # Evaluations run in the API server (with --api-only too): they call its own OpenAI API over HTTP,
        # with an internal token for the evaluation's project (evaluation/worker.py, api/deps.py).
        state.internal_tokens = InternalTokens()
        state.evaluations = EvaluationService(
            sessions,
            state.files,
            state.catalog,
            settings.data_dir / "evaluations",
            check_base_models=settings.inference_backend != "vllm",
        )
        state.evaluation_worker = EvaluationWorker(
            state.evaluations, state.internal_tokens, self_base_url(settings.host, settings.port)
        )
        state.evaluation_worker.start()
        try:
            yield
        finally:
            state.evaluation_worker.stop()
            state.scheduler.stop()
            state.engine.close()
            if state.upstream is not None:
                await state.upstream.aclose()
            db.dispose()

    app = FastAPI(
        title="tuneserve",
        version=__version__,
        lifespan=lifespan,
        description="Self-hosted fine-tuning with OpenAI's API: files, fine-tuning jobs, models, chat/completions.",
        # Answers go through json.dumps as they always did (pydantic's own JSON writes 1e-05 as 1e-5): the bytes stay the same.
        default_response_class=JSONResponse,
        # Every route can answer 413 (api/limits.py refuses any body past its limit): the document says so.
        responses=TOO_LARGE_RESPONSE,
    )
    app.openapi = lambda: _openapi(app)
    for module in (files, fine_tuning, downloads, opea, models, adapters, console):
        app.include_router(module.router)
    app.include_router(evaluations_api.router)
    app.include_router(together.router)  # Together's SDK: /v1/fine-tunes, its upload steps, /v1/finetune/download
    # With an upstream (vLLM, or the llama.cpp server tuneserve runs), chat/completions are proxied to it;
    # otherwise this process generates.
    app.include_router(adapters.proxy_router if settings.inference_backend != "local" else inference.router)

    # Pure ASGI middlewares (BaseHTTPMiddleware would cost every request a task and a copy of each message).
    # Added last is outermost: CORS answers a preflight before any limit, and adds its headers to a 413 too.
    app.add_middleware(BodyLimit, max_request_bytes=settings.max_request_bytes, max_upload_bytes=settings.max_upload_bytes)
    if settings.cors_origins:
        # Keys are bearer tokens, never cookies: no credentials mode, so no origin may read a browser's cookies here.
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["*"], allow_headers=["*"])

    @app.exception_handler(TuneserveError)
    async def domain_error(_request: Request, exc: TuneserveError):
        return JSONResponse(error_body(exc.message, exc.type, exc.param, exc.code), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError):
        errors = exc.errors() or [{"loc": (), "msg": "invalid request", "type": ""}]
        # A union ("auto" | number, str | list) reports one error per member: the number's, not the literal's, and
        # the member whose type the value has (a list too short, a number too big), not a bare "should be a string".
        members = [e for e in errors if not any("literal[" in str(p) for p in e.get("loc", ()))] or errors
        first = next((e for e in members if not str(e.get("type", "")).endswith("_type")), members[0])
        if first.get("type") == "json_invalid":
            return JSONResponse(
                error_body(
                    f"The request body is not valid JSON: {first.get('ctx', {}).get('error', first['msg'])}", code="invalid_json"
                ),
                status_code=400,
            )
        loc = [str(p) for p in first.get("loc", ()) if p not in _LOC_NOISE and "[" not in str(p)]
        param = ".".join(loc) or None
        where = f"'{param}'" if param else "the request"
        return JSONResponse(
            error_body(f"Invalid value for {where}: {first['msg']}", param=param, code="invalid_value"), status_code=400
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        headers = dict(exc.headers or {})
        if exc.status_code == 405 and (methods := documented_methods(app, request.url.path)):
            # RFC 9110: Allow lists every method of the path; Starlette names only the first route's.
            headers["Allow"] = ", ".join(methods)
        return JSONResponse(error_body(str(exc.detail), param=None, code=code), status_code=exc.status_code, headers=headers)

    @app.exception_handler(Exception)
    async def server_error(_request: Request, exc: Exception):
        log.exception("unhandled error")
        return JSONResponse(
            error_body(f"internal error: {type(exc).__name__}", type="server_error", code="internal_error"), status_code=500
        )

    @app.exception_handler(DBAPIError)
    async def database_error(request: Request, exc: DBAPIError):
        # The database down or restarting is a 503 (the pool reconnects by itself); any other database error is a bug.
        unavailable = database_unavailable(exc)
        if unavailable is None:
            return await server_error(request, exc)
        log.warning("%s %s: database unavailable: %s", request.method, request.url.path, exc.orig)
        return await domain_error(request, unavailable)

    return app
