"""Hint generation, end to end, on tuneserve: the Together seed's flow (HintEval's "Fine-tuning"
how-to) with tuneserve in Together's place, all through the official `openai` client.

    1. build a training file from question/answer/hint triples with a custom template
    2. check it locally, delete earlier uploads of it, upload it
    3. fine-tune and wait for the job, timing it
    4. generate hints for held-out questions with the fine-tuned model

Run it against a server (tuneserve serve) with:

    python examples/hint_generation/hint_generation.py --base-url http://127.0.0.1:8015/v1 \
        --model HuggingFaceTB/SmolLM2-135M-Instruct

The last line printed is a JSON summary: the job, the model, the time it took, and the hints.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import time
from datetime import timedelta
from pathlib import Path

from openai import OpenAI

HERE = Path(__file__).resolve().parent
SYSTEM_PROMPT = (
    "You are a helpful assistant that generates hints for user questions. You are given the question, "
    "and your goal is to generate hints for the question."
)
USER_PROMPT = 'Generate {n} hints for the following question without using "{answer}" word in the hints. Question: {question}'
# The custom template: each example is written as raw text in the model's own chat format (ChatML for
# SmolLM2), as the seed writes Llama 3's. Raw text trains on every token. Chat completions render the
# same format, so the fine-tuned model sees at inference what it saw in training. For another model,
# write its format here (e.g. Llama 3's <|start_header_id|>...<|eot_id|>).
TEMPLATE = (
    "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n{assistant}<|im_end|>\n"
)
TRAIN_NAME = "wikihint.jsonl"


def build_training_file(triples: list[dict], out: Path, seed: int) -> Path:
    """One {"text"} example per question: the prompt and the numbered hints in the template."""
    lines = []
    for triple in triples:
        hints = "".join(f"{i}. {hint}\n" for i, hint in enumerate(triple["hints"], start=1))
        text = TEMPLATE.format(
            system=SYSTEM_PROMPT,
            assistant=hints.rstrip("\n"),
            user=USER_PROMPT.format(n=len(triple["hints"]), answer=triple["answer"], question=triple["question"]),
        )
        lines.append(json.dumps({"text": text}))
    random.Random(seed).shuffle(lines)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def upload(client: OpenAI, path: Path) -> str:
    """Check the file as the server will (the seed ran together's check_file), replace earlier uploads."""
    try:
        from tuneserve.data import validate_file

        report = validate_file(path)
    except ImportError:  # the client machine may not have tuneserve installed: the server checks at upload anyway
        report = None
    if report is not None and not report.ok:
        raise SystemExit(f"{path}: {report.summary()}")
    for old in client.files.list().data:
        if old.filename.startswith(path.stem):
            client.files.delete(old.id)
    return client.files.create(file=path.open("rb"), purpose="fine-tune").id


def fine_tune(client: OpenAI, model: str, file_id: str, n_epochs: int, lr_multiplier: float) -> str:
    job = client.fine_tuning.jobs.create(
        model=model,
        training_file=file_id,
        suffix="wikihint-finetuned",
        hyperparameters={"n_epochs": n_epochs, "batch_size": 4, "learning_rate_multiplier": lr_multiplier},
    )
    return job.id


def wait(client: OpenAI, job_id: str, timeout_s: float) -> object:
    print("The model is being fine-tuned... please wait.", flush=True)
    deadline = time.monotonic() + timeout_s
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in ("succeeded", "failed", "cancelled"):
            print(f"Fine-tuning {job.status}.", flush=True)
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"{job_id} is still {job.status} after {timeout_s:.0f}s")
        time.sleep(2)


def generate_hints(client: OpenAI, model: str, question: str, answer: str, n: int, max_tokens: int) -> dict:
    reply = client.chat.completions.create(
        model=model,
        temperature=0,
        max_tokens=max_tokens,
        messages=[
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": USER_PROMPT.format(n=n, answer=answer, question=question)},
        ],
    )
    text = reply.choices[0].message.content or ""
    hints = [m.group(1).strip() for m in re.finditer(r"^\s*\d+[.)]\s*(.+)$", text, re.M)]
    return {"question": question, "answer": answer, "hints": hints, "raw": text}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:8015/v1")
    parser.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    parser.add_argument("--n-epochs", type=int, default=3)
    parser.add_argument("--lr-multiplier", type=float, default=2.0)
    parser.add_argument("--hints", type=int, default=3, help="hints per test question")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for the fine-tuning job")
    parser.add_argument("--workdir", type=Path, default=Path("."), help="where the training file is written")
    args = parser.parse_args(argv)

    client = OpenAI(base_url=args.base_url, api_key=os.environ.get("OPENAI_API_KEY", "unused-until-you-create-keys"))
    triples = [json.loads(line) for line in (HERE / "hints_train.jsonl").read_text().splitlines()]
    tests = [json.loads(line) for line in (HERE / "hints_test.jsonl").read_text().splitlines()]

    args.workdir.mkdir(parents=True, exist_ok=True)
    train_file = build_training_file(triples, args.workdir / TRAIN_NAME, seed=1234)
    file_id = upload(client, train_file)
    job_id = fine_tune(client, args.model, file_id, args.n_epochs, args.lr_multiplier)
    start = time.monotonic()
    job = wait(client, job_id, args.timeout)
    elapsed = time.monotonic() - start
    print(f"Execution time: {timedelta(seconds=round(elapsed))}")
    if job.status != "succeeded":
        print(json.dumps({"job_id": job_id, "status": job.status, "error": job.error.message if job.error else None}))
        return 1
    print(f"Model name: {job.fine_tuned_model}")  # served at once: no deployment step, unlike the seed
    results = []
    for test in tests:
        result = generate_hints(client, job.fine_tuned_model, test["question"], test["answer"], args.hints, args.max_tokens)
        print(f"\n{result['question']}\n{result['raw']}")
        results.append(result)
    print(
        json.dumps(
            {
                "job_id": job_id,
                "status": job.status,
                "file_id": file_id,
                "model": job.fine_tuned_model,
                "elapsed_s": round(elapsed, 1),
                "results": results,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
