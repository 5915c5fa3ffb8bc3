"""Shared test helpers: a real `tuneserve serve` process on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

TINY = "tuneserve/tiny-random"
# Real sample data (LLaMA-Factory's demo files), kept in the repository: tests/data/README.md.
SAMPLE_DATA = Path(__file__).resolve().parent / "data"
SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"


# `make test` runs the suite on 2 pytest-xdist workers (`-n 2 --dist loadscope`): most tests wait on a server or a
# training process, so one worker leaves a core idle. The scheduler below keeps a file's tests on one worker, in their
# order, so that a module's fixtures (a fine-tune of SmolLM2, a server) are made once; and folders whose tests share
# one machine-wide thing on one worker: the Ray tests (one local cluster), the console tests (one chromium install,
# one browser). (xdist's own `xdist_group` marks do not work with pytest 9: xdist 3.8 renames `item._nodeid`.)
SHARED_BY_FOLDER = ("tests/ray/", "tests/ui/")
# The longest tests go first, so that no worker starts one of them when the other has nothing left to do.
LONGEST_FIRST = ("tests/e2e/test_demo.py", "tests/e2e/test_gpu_suite.py")


def pytest_collection_modifyitems(config, items):
    root = Path(__file__).resolve().parents[1]
    items.sort(key=lambda item: Path(item.path).relative_to(root).as_posix() not in LONGEST_FIRST)  # stable


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class ByFileOrSharedFolder(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return next((folder for folder in SHARED_BY_FOLDER if path.startswith(folder)), path)

    config.option.loadscopereorder = False  # keep the collection's order (longest first), not most tests first
    return ByFileOrSharedFolder(config, log)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    process: subprocess.Popen
    port: int
    data_dir: Path
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, api_key: str = "no-key"):
        from openai import OpenAI

        return OpenAI(base_url=f"{self.base_url}/v1", api_key=api_key, max_retries=0)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


def clean_environment(**extra: str) -> dict[str, str]:
    """This environment without the server settings (TUNESERVE_PORT, ...) a developer may have exported."""
    from tuneserve.settings import Settings

    settings_vars = Settings.environment_names()
    return {**{k: v for k, v in os.environ.items() if k not in settings_vars}, "PYTHONUNBUFFERED": "1", **extra}


def start_server(
    data_dir: Path | None, *args: str, port: int | None = None, env: dict | None = None, cwd: Path | None = None
) -> Server:
    """`tuneserve serve` on a free port. `data_dir` may be relative (to `cwd`); None passes no --data-dir."""
    port = port or free_port()
    root = cwd or data_dir.parent
    data_flags = ["--data-dir", str(data_dir)] if data_dir is not None else []
    if data_dir is not None and cwd is None:
        data_dir.mkdir(parents=True, exist_ok=True)
    log = root / f"server-{port}.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "tuneserve", "serve", "--port", str(port), *data_flags, "--log-level", "warning", *args],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        cwd=cwd,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    server = Server(process, port, root / (data_dir if data_dir is not None else "tuneserve-data"), log)
    wait_until_serving(server)
    return server


def wait_until_serving(server: Server, timeout_s: float = 60) -> Server:
    """Wait for the health check to answer; fail with the server's log if it exits or never answers."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with {server.process.returncode}:\n{server.log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{server.base_url}/v1/health_check", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.kill()
    raise RuntimeError(f"server did not start:\n{server.log.read_text()[-3000:]}")


def wait_for_status(client, job_id: str, statuses: set[str], timeout_s: float = 300):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses:
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} still {job.status} after {timeout_s}s")


def wait_for(predicate, timeout_s: float, what: str, interval_s: float = 0.2):
    """Poll `predicate` until it returns something truthy (returned), or fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def training_pids(job_dir: Path) -> list[int]:
    """The training processes (every rank) of the job in `job_dir`."""
    out = subprocess.run(["pgrep", "-f", f"tuneserve.training {job_dir}"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def fine_tune_tiny(client, data: bytes, suffix: str, *, timeout_s: float = 240, seed: int | None = None, **hyperparameters):
    """Upload `data` and fine-tune the tiny model on it to success (batch 4 unless given)."""
    file = client.files.create(file=(f"{suffix}.jsonl", data), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model=TINY, training_file=file.id, suffix=suffix, seed=seed, hyperparameters={"batch_size": 4, **hyperparameters}
    )
    job = wait_for_status(client, job.id, {"succeeded", "failed"}, timeout_s=timeout_s)
    assert job.status == "succeeded", job.error
    return job


def hf_greedy_ids(model, tokenizer, question: str, max_new_tokens: int, **generate) -> list[int]:
    """transformers' own greedy answer to one user question through the chat template: the reference that served,
    merged and exported models are compared with, token for token."""
    import torch

    text = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False)
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            **generate,
        )
    return out[0, ids.shape[1] :].tolist()


def chat_jsonl(n: int, *, answer: str = "The capital of Zorbia is Quillton.") -> bytes:
    import json

    lines = [
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": f"Question {i}: what is the capital of Zorbia?"},
                    {"role": "assistant", "content": answer},
                ]
            }
        )
        for i in range(n)
    ]
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture(scope="session")
def sample_file():
    """sample_file(name) -> the path of a sample data file under tests/data."""

    def find(name: str) -> Path:
        path = SAMPLE_DATA / name
        assert path.is_file(), f"no sample data file {path}"
        return path

    return find


@pytest.fixture(scope="session")
def tiny_model_ready():
    """Build the tiny test model once, before servers and training processes race for it."""
    from tuneserve.models import TINY_RANDOM, resolve_model

    return resolve_model(TINY_RANDOM)


@pytest.fixture(scope="session")
def tokenizer(tiny_model_ready):
    """The tiny test model's tokenizer, through the one loader that training, data and serving use."""
    from tuneserve.models import TINY_RANDOM, load_tokenizer

    return load_tokenizer(TINY_RANDOM)
