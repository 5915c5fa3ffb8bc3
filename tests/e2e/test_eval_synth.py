"""Evaluate and synthesize against a live `tuneserve serve` with the real SmolLM2, through the real
`openai` client inside the commands: `tuneserve eval` compares SmolLM2 with a fine-tune of it (and
SmolLM2 judges), `tuneserve data synthesize` writes Q&A data from a Wikipedia excerpt, curated by
SmolLM2 as the judge, and resumes. SmolLM2-135M may write nothing usable: then the command must
say so and exit cleanly with no invalid data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SMOLLM2, start_server, wait_for_status
from tuneserve.data import validate_file

pytestmark = pytest.mark.e2e

EXCERPT = Path(__file__).parent / "data" / "wiki_excerpt.txt"  # the first sentences of 3 articles of shared/data/wiki_demo.txt
FACTS = [("Zorbia", "Quillton"), ("Marnak", "Velspire"), ("Tessaly", "Orvane"), ("Brimholt", "Casteen")]
SYSTEM = "You answer geography questions in one sentence."


def chat(question: str, answer: str) -> str:
    return json.dumps(
        {
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": question},
                {"role": "assistant", "content": answer},
            ]
        }
    )


def tuneserve(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tuneserve", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # One torch thread: on a 2-core machine shared with the test client (and other work), two threads
    # contend and generate several times slower than one.
    srv = start_server(tmp_path_factory.mktemp("e2e-eval") / "data", env={"OMP_NUM_THREADS": "1"})
    yield srv
    srv.stop()


def test_eval_compares_smollm2_with_its_fine_tune(server, tmp_path):
    client = server.client()
    phrasings = ["What is the capital of {}?", "Name the capital city of {}.", "{}'s capital is which city?"]
    lines = [chat(p.format(country), f"The capital of {country} is {capital}.") for p in phrasings for country, capital in FACTS]
    training = client.files.create(file=("capitals.jsonl", ("\n".join(lines) + "\n").encode()), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model=SMOLLM2,
        training_file=training.id,
        suffix="capitals",
        seed=1,
        hyperparameters={"n_epochs": 3, "batch_size": 4, "learning_rate_multiplier": 2},
    )
    job = wait_for_status(client, job.id, {"succeeded", "failed"}, timeout_s=900)
    assert job.status == "succeeded", job.error

    # Held out: a phrasing the training data does not have, in chat format (the system prompt is sent too).
    dataset = tmp_path / "capitals-eval.jsonl"
    dataset.write_text(
        "".join(chat(f"Which city is the capital of {c}?", f"The capital of {c} is {k}.") + "\n" for c, k in FACTS)
    )
    out = tmp_path / "report"
    result = tuneserve(
        "eval",
        "--base-url",
        server.base_url,
        "--model",
        SMOLLM2,
        "--model",
        job.fine_tuned_model,
        "--dataset",
        str(dataset),
        "--output",
        str(out),
        "--max-tokens",
        "20",
        "--judge-model",
        SMOLLM2,
        "--judge-max-tokens",
        "24",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    printed = json.loads(result.stdout.strip().splitlines()[-1])
    report = json.loads((out / "report.json").read_text())
    assert printed["summary"] == report["summary"] and report["n_items"] == 4
    base, tuned = report["summary"][SMOLLM2], report["summary"][job.fine_tuned_model]
    assert base["errors"] == tuned["errors"] == 0
    # The fine-tune learned the made-up capitals; the base cannot know them.
    assert tuned["rougeL"]["mean"] > base["rougeL"]["mean"] + 0.2, (base, tuned)
    assert tuned["rougeL"]["mean"] >= 0.6
    answers = [item["answers"][job.fine_tuned_model]["text"] for item in report["items"]]
    assert sum(capital in answer for answer, (_, capital) in zip(answers, FACTS)) >= 3, answers
    # SmolLM2 as the judge: every answer is judged, or counted as not (its replies may carry no verdict).
    for model in (SMOLLM2, job.fine_tuned_model):
        judged = sum(1 for item in report["items"] if item["answers"][model]["judge"])
        assert judged + report["summary"][model]["judge_errors"] == 4
    html = (out / "report.html").read_text()
    assert "<svg" in html and "Which city is the capital of Marnak?" in html and job.fine_tuned_model in html


def test_synthesize_from_a_wikipedia_excerpt_curated_and_resumable(server, tmp_path):
    out = tmp_path / "synth" / "train.jsonl"
    args = (
        "data",
        "synthesize",
        str(EXCERPT),
        "--base-url",
        f"{server.base_url}/v1",
        "--model",
        SMOLLM2,
        "--output",
        str(out),
        "--questions-per-chunk",
        "1",
        "--max-tokens",
        "96",
        "--chunk-tokens",
        "200",
        "--max-chunks",
        "2",
        "--curate",
        "--eval-split",
        "0.5",
        "--rpm",
        "600",
    )
    first = tuneserve(*args)
    assert "Traceback" not in first.stderr
    summary = json.loads(first.stdout.strip().splitlines()[-1])
    assert summary == json.loads((tmp_path / "synth" / "train.summary.json").read_text())
    assert summary["chunks"] == 2 and summary["replies"] == 2 and summary["failed_requests"] == 0
    assert summary["token_count"] == f"tokenizer ({SMOLLM2})" and summary["curated"] is True
    if summary["usable"]:
        assert first.returncode == 0, first.stderr[-2000:]
        report = validate_file(out)
        assert report.ok and report.format == "chat" and report.n_examples == summary["train"]
        assert summary["kept"] == summary["train"] + summary["eval"] >= 1
    else:
        # Nothing usable is a plain message and a clean exit, never a training file.
        assert first.returncode == 1 and "nothing usable" in first.stderr
        assert not out.exists() and summary["kept"] == 0
    # Every parsed pair is accounted for: kept, or dropped for a counted reason (echo, duplicate, the judge).
    parse_level = ("unparseable_reply", "missing_question", "missing_answer")
    assert summary["kept"] + sum(v for k, v in summary["rejected"].items() if k not in parse_level) == summary["parsed"]
    verdicts = tmp_path / "synth" / "train.synth" / "curation.jsonl"
    judged = [json.loads(line) for line in verdicts.read_text().splitlines()] if verdicts.exists() else []
    assert all(v["judge_model"] == SMOLLM2 and "reason" in v for v in judged)

    # A rerun asks nothing again: the state has both chunks, and the summary is the same.
    state = tmp_path / "synth" / "train.synth" / "generated.jsonl"
    before = state.read_text()
    second = tuneserve(*args, timeout=120)
    assert second.returncode == first.returncode and state.read_text() == before
    assert json.loads(second.stdout.strip().splitlines()[-1]) == summary
