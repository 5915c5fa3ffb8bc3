"""`tuneserve demo`: the whole product in one command, through the official `openai` client.

Starts a server, fills the identity data with a new name and author, uploads it, fine-tunes
SmolLM2 with all-default ("auto") hyperparameters, and compares base and fine-tuned answers,
including 8 paraphrases of "Who are you?" that the data does not contain.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tuneserve.models import BUILTIN_SMOLLM2

# Paraphrases of "Who are you?" that are not among the training instructions.
PARAPHRASES = (
    "What should I call you?",
    "Please introduce yourself.",
    "What's your name?",
    "Who am I talking to?",
    "Could you tell me your name?",
    "Hey, who is this?",
    "What do people call you?",
    "Tell me who you are.",
)


def identity_jsonl(name: str, author: str) -> bytes:
    """The identity set as chat JSONL, placeholders filled."""
    raw = resources.files("tuneserve.demo_data").joinpath("identity.json").read_text(encoding="utf-8")
    lines = []
    for item in json.loads(raw):
        answer = item["output"].replace("{{name}}", name).replace("{{author}}", author)
        prompt = item["instruction"] + (f"\n\n{item['input']}" if item.get("input") else "")
        lines.append(
            json.dumps(
                {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]}, ensure_ascii=False
            )
        )
    return ("\n".join(lines) + "\n").encode()


def _holds_other_data(data_dir: Path) -> bool:
    """True when `data_dir` has files and is not a tuneserve data dir (a mistyped --data-dir)."""
    return data_dir.is_dir() and any(data_dir.iterdir()) and not (data_dir / "tuneserve.db").is_file()


def _server_environment() -> dict[str, str]:
    """This environment less the server's own settings (TUNESERVE_DATABASE_URL, ...): the demo's server
    runs on the embedded defaults and its own data dir, never on a real deployment's database."""
    from tuneserve.settings import Settings

    settings_vars = Settings.environment_names()
    return {**{k: v for k, v in os.environ.items() if k not in settings_vars}, "PYTHONUNBUFFERED": "1"}


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _wait_ready(base_url: str, process: subprocess.Popen, timeout_s: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the server exited during start; see its output above")
        try:
            if httpx.get(f"{base_url}/v1/health_check", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError("the server did not start in time")


def ask(client, model: str, question: str) -> str:
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": question}], temperature=0, max_tokens=60
    )
    return reply.choices[0].message.content.strip()


def run_demo(data_dir: Path, *, port: int = 8015, name: str = "Nova", author: str = "Quill Labs") -> int:
    from openai import OpenAI

    console = Console()
    if not _port_free(port):
        console.print(f"[red]port {port} is taken; pass --port[/red]")
        return 2
    data_dir = data_dir.expanduser().resolve()
    if _holds_other_data(data_dir):
        console.print(
            f"[red]{data_dir} holds files that are not a tuneserve data dir; the demo wipes its data dir, "
            "so pass another --data-dir[/red]"
        )
        return 2
    shutil.rmtree(data_dir, ignore_errors=True)
    base_url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tuneserve",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--log-level",
            "warning",
        ],
        env=_server_environment(),
    )
    try:
        _wait_ready(base_url, server)
        client = OpenAI(base_url=f"{base_url}/v1", api_key="unused-on-loopback")
        console.rule(f"tuneserve demo: teach {BUILTIN_SMOLLM2} that it is {name}, made by {author}")
        console.print(f"server {base_url}, data in {data_dir}")
        training = client.files.create(file=("identity.jsonl", identity_jsonl(name, author)), purpose="fine-tune")
        console.print(f"uploaded {training.id}: {training.status_details}")
        base_answer = ask(client, BUILTIN_SMOLLM2, "Who are you?")
        # Every hyperparameter stays "auto"; the seed is fixed so the demo's result is reproducible.
        job = client.fine_tuning.jobs.create(model=BUILTIN_SMOLLM2, training_file=training.id, suffix="identity", seed=42)
        console.print(f"job {job.id}: {job.status}, hyperparameters {job.hyperparameters.model_dump()}")
        job = _follow(client, job.id, console)
        if job.status != "succeeded":
            console.print(f"[red]job {job.status}: {job.error}[/red]")
            return 1
        console.print(f"fine-tuned model: [bold]{job.fine_tuned_model}[/bold] ({job.trained_tokens} trained tokens)")
        return _compare(client, job.fine_tuned_model, base_answer, name, console)
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


def _follow(client, job_id: str, console: Console):
    """Poll the job and its metrics events, with a progress bar of training steps."""
    seen: set[str] = set()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TextColumn("loss {task.fields[loss]}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("queued", total=None, loss="-")
        while True:
            job = client.fine_tuning.jobs.retrieve(job_id)
            for event in reversed(client.fine_tuning.jobs.list_events(job_id, limit=50).data):
                if event.id in seen:
                    continue
                seen.add(event.id)
                if event.type == "metrics" and event.data:
                    progress.update(
                        task,
                        completed=event.data.get("step", 0),
                        total=event.data.get("total_steps"),
                        loss=f"{event.data.get('train_loss', float('nan')):.3f}",
                    )
                else:
                    progress.console.print(f"  {event.message}")
            progress.update(task, description=job.status)
            if job.status in ("succeeded", "failed", "cancelled"):
                return job
            time.sleep(1)


def _compare(client, model: str, base_answer: str, name: str, console: Console) -> int:
    table = Table(title="Who are you?", show_lines=True)
    table.add_column("model")
    table.add_column("answer")
    table.add_row(BUILTIN_SMOLLM2, base_answer)
    table.add_row(model, ask(client, model, "Who are you?"))
    console.print(table)
    base_hits = tuned_hits = 0
    paraphrases = Table(title=f"Paraphrases not in the training data: does the answer say {name!r}?", show_lines=True)
    for column in ("question", "base", "fine-tuned"):
        paraphrases.add_column(column)
    for question in PARAPHRASES:
        base, tuned = ask(client, BUILTIN_SMOLLM2, question), ask(client, model, question)
        base_hits += name.lower() in base.lower()
        tuned_hits += name.lower() in tuned.lower()
        paraphrases.add_row(question, base, tuned)
    console.print(paraphrases)
    console.print(f"[bold]{name!r} named in {tuned_hits}/8 fine-tuned answers, {base_hits}/8 base answers[/bold]")
    print(
        json.dumps({"fine_tuned_model": model, "paraphrases_named_fine_tuned": tuned_hits, "paraphrases_named_base": base_hits})
    )
    return 0
