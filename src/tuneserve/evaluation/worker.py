"""The evaluation worker: a thread in the server that runs queued evaluations, one at a time,
and queues the automatic evaluation of fine-tuning jobs that asked for one (`auto_evaluate`).

Owns: the thread (and its heartbeat thread: running evaluations are held under leases, as jobs
are; see jobs/leases.py), and the internal tokens it calls this server with. It runs the same code as
`tuneserve eval` (runner.py, report.py), through this server's own OpenAI API over HTTP, so an
evaluation sees exactly what a client sees (the engine's batching, a vLLM upstream, project scoping).

Calling itself when API keys are on. No key of a project is stored where the server can read it
(keys are kept hashed), and the worker must act for the evaluation's project only. So for each
run it issues an internal token: 256 random bits, kept only in this process's memory (hashed),
mapped to that one project, revoked when the run ends. api/deps.py accepts it like a key of that
project. It is only ever sent to this server's own loopback address; a separate judge endpoint
(judge_base_url) never sees it. That judge gets $TUNESERVE_JUDGE_API_KEY only if its URL is the one
the operator set in $TUNESERVE_JUDGE_BASE_URL, and no key otherwise, so a user cannot make the
server send a secret to a URL of their choosing.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from typing import Any

from tuneserve.data.records import DataError
from tuneserve.evaluation.dataset import load_eval_items
from tuneserve.llm.endpoint import JUDGE_API_KEY_ENV, make_client, normalize_base_url
from tuneserve.evaluation.judge import Judge
from tuneserve.evaluation.report import build_report, failed_models, write_report
from tuneserve.evaluation.runner import Cancelled, EndpointUnreachable, run_evaluation
from tuneserve.evaluation.service import EvaluationService
from tuneserve.store.keys import hash_key
from tuneserve.store.tables import Evaluation

log = logging.getLogger("tuneserve.evaluations")

JUDGE_BASE_URL_ENV = "TUNESERVE_JUDGE_BASE_URL"
HOUSEKEEPING_EVERY_S = 5.0  # queue auto-evaluations, take back runs of stopped servers
HEARTBEAT_EVERY_S = 5.0  # well inside service.STALE_AFTER_S, after which another server takes a run back
PROGRESS_EVERY_S = 0.5
UNREACHABLE_GRACE_S = 10.0


class InternalTokens:
    """Bearer tokens the worker uses to call this server as one project, while one evaluation runs."""

    def __init__(self):
        self._projects: dict[str, str] = {}
        self._lock = threading.Lock()

    def issue(self, project: str) -> str:
        token = "ts-internal-" + secrets.token_urlsafe(32)
        with self._lock:
            self._projects[hash_key(token)] = project
        return token

    def revoke(self, token: str) -> None:
        with self._lock:
            self._projects.pop(hash_key(token), None)

    def project_of(self, token: str) -> str | None:
        if not token.startswith("ts-internal-"):
            return None
        with self._lock:
            return self._projects.get(hash_key(token))


def self_base_url(host: str, port: int) -> str:
    """This server's API root as the worker reaches it: a wildcard bind is reached on loopback."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/v1"


class EvaluationWorker:
    def __init__(
        self,
        service: EvaluationService,
        tokens: InternalTokens,
        base_url: str,
        *,
        poll_interval_s: float = 1.0,
        worker_id: str | None = None,
    ):
        self.service = service
        # Stable across restarts of the same server (host and address), so a restart takes back its own runs.
        self.worker_id = worker_id or f"{socket.gethostname()}:{base_url}"
        self.tokens = tokens
        self.base_url = base_url
        self.poll_interval_s = poll_interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._heart: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="tuneserve-evaluations", daemon=True)
        self._thread.start()
        # A thread of its own: one slow answer (minutes, with retries) must not make the run look abandoned.
        self._heart = threading.Thread(target=self._heartbeat_loop, name="tuneserve-evaluations-heartbeat", daemon=True)
        self._heart.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in (self._thread, self._heart):
            if thread is not None:
                thread.join(timeout=30)

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(HEARTBEAT_EVERY_S):
            try:
                self.service.heartbeat(self.worker_id)
            except Exception as exc:  # a database blip: the next beat tries again
                log.warning("evaluation heartbeat failed: %s", exc)

    def _loop(self) -> None:
        next_housekeeping = 0.0
        while not self._stop.is_set():
            row = None
            try:
                if time.monotonic() >= next_housekeeping:  # at start, then every few seconds
                    next_housekeeping = time.monotonic() + HOUSEKEEPING_EVERY_S
                    self.service.requeue_interrupted(self.worker_id)
                    for created in self.service.create_auto_evaluations():
                        log.info("evaluation %s queued for fine-tuning job %s", created.id, created.fine_tuning_job_id)
                row = self.service.claim_next(self.worker_id)
                if row is not None:
                    self.run(row)
            except Exception as exc:  # the worker outlives any one surprise (a database blip, a bug in one run)
                log.exception("evaluation worker error")
                if row is not None:
                    self._fail_quietly(row.id, f"internal error: {type(exc).__name__}: {exc}")
            if row is None:
                self._stop.wait(self.poll_interval_s)

    def _fail_quietly(self, evaluation_id: str, message: str) -> None:
        try:
            self.service.finish(evaluation_id, self.worker_id, error={"message": message, "code": "internal_error"})
        except Exception:
            log.exception("could not record the failure of evaluation %s", evaluation_id)

    def run(self, row: Evaluation) -> None:
        """Run one claimed evaluation to succeeded or failed (or leave it cancelled)."""
        try:
            items = load_eval_items(self.service.dataset_path(row), max_items=row.params.get("max_items"))
        except (DataError, OSError) as exc:
            error = {"message": f"dataset_file {row.dataset_file}: {exc}", "code": "invalid_dataset"}
            self.service.finish(row.id, self.worker_id, error=error)
            return
        token = self.tokens.issue(row.project)
        try:
            client = make_client(self.base_url, token, max_retries=2, timeout_s=600)
            results = run_evaluation(
                items,
                row.models,
                client,
                judge=self._judge(row, client),
                max_tokens=row.params["max_tokens"],
                temperature=row.params["temperature"],
                concurrency=row.params["concurrency"],
                on_progress=self._progress(row.id),
                # Stops when cancelled by the API, or taken back by another server (this one looked gone).
                should_stop=lambda: self._stop.is_set() or not self.service.is_held(row.id, self.worker_id),
            )
        except Cancelled:
            return  # cancelled by the API (it stays so), or the server is stopping (queued again at the next start)
        except EndpointUnreachable as exc:
            # While the server shuts down it refuses new connections before it stops this worker:
            # give the stop a moment to arrive, so the evaluation is run again at the next start.
            if not self._stop.wait(UNREACHABLE_GRACE_S):
                self.service.finish(row.id, self.worker_id, error={"message": str(exc), "code": "endpoint_unreachable"})
            return
        finally:
            self.tokens.revoke(token)
        settings = {**row.params, "judge_model": row.judge_model}
        report = build_report(results, row.models, dataset=row.dataset_file, settings=settings)
        write_report(report, self.service.report_dir(row.id))
        failed = failed_models(report)
        error = None
        if failed:
            first = next(r["answers"][failed[0]]["error"] for r in results)
            error = {"message": f"every request to {failed[0]} failed, e.g. {first}", "code": "model_failed"}
        self.service.finish(row.id, self.worker_id, summary=report["summary"], error=error)
        log.info("evaluation %s %s", row.id, "failed" if error else "succeeded")

    def _judge(self, row: Evaluation, client: Any) -> Judge | None:
        if not row.judge_model:
            return None
        if not row.judge_base_url:
            return Judge(client, row.judge_model)  # this server, as the evaluation's project
        trusted = os.environ.get(JUDGE_BASE_URL_ENV)
        same = trusted and normalize_base_url(trusted) == normalize_base_url(row.judge_base_url)
        key = os.environ.get(JUDGE_API_KEY_ENV) if same else None
        return Judge(make_client(row.judge_base_url, key or "unused", max_retries=3, timeout_s=600), row.judge_model)

    def _progress(self, evaluation_id: str):
        last = [0.0]

        def update(done: int, total: int) -> None:
            if done == total or time.monotonic() - last[0] >= PROGRESS_EVERY_S:
                last[0] = time.monotonic()
                self.service.set_progress(evaluation_id, self.worker_id, done, total)

        return update
