"""README's first command exactly as it is written: `make demo`, from the repository root, with the
demo's own defaults (port 8015, data in ./tuneserve-demo, a path relative to the root). SmolLM2 learns
a new identity with all "auto" hyperparameters, and names itself when asked paraphrases it was not
trained on."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import clean_environment

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def test_make_demo_teaches_the_new_name():
    assert shutil.which("make"), "the README's first command is `make demo`"
    # As from a user's shell: not as a sub-make of `make test` (which would also print "Leaving directory").
    env = {k: v for k, v in clean_environment().items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    result = subprocess.run(["make", "demo"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads(next(line for line in reversed(result.stdout.splitlines()) if line.startswith("{")))
    assert summary["paraphrases_named_base"] == 0
    assert summary["paraphrases_named_fine_tuned"] >= 6, summary
    assert "I am Nova" in result.stdout or "I'm Nova" in result.stdout
    # The job ran under the default, relative data dir.
    job_id = "ftjob-" + summary["fine_tuned_model"].rsplit(":", 1)[-1]
    final = ROOT / "tuneserve-demo" / "jobs" / job_id / "final"
    assert (final / "adapter_config.json").is_file()
    # The quality benchmark's 16 held-out identity questions (benchmarks/auto_quality.py), asked of the demo's
    # model at its one seed: a regression in the defaults fails here, not only in the benchmark.
    named = ask_heldout_identity(final, name="Nova", author="Quill Labs")
    assert sum(named.values()) >= 14, named


def ask_heldout_identity(adapter: Path, *, name: str, author: str) -> dict[str, bool]:
    """question -> whether the greedy answer names what it must (the name, or the author)."""
    from concurrent.futures import ThreadPoolExecutor

    from tuneserve.inference.engine import Engine, SamplingParams
    from tuneserve.models import BUILTIN_SMOLLM2

    tasks = json.loads((ROOT / "benchmarks" / "data" / "auto_quality.json").read_text())
    questions = {q["prompt"]: [e.format(name=name, author=author) for e in q["expect"]] for q in tasks["identity"]["heldout"]}
    engine = Engine()
    try:

        def named(question: str) -> bool:
            messages = [{"role": "user", "content": question}]
            answer = engine.chat(BUILTIN_SMOLLM2, adapter, messages, SamplingParams(max_tokens=48, temperature=0)).text
            return all(e.lower() in answer.lower() for e in questions[question])

        with ThreadPoolExecutor(len(questions)) as pool:
            return dict(zip(questions, pool.map(named, questions)))
    finally:
        engine.close()
