"""Faithful serving: what the server answers is what the trained model answers beside the trainer.

Trains the identity adapter on SmolLM2 in-process, then, for 4 identity questions, compares greedy
answers from three places, token for token as text:
- beside the trainer: plain transformers + PEFT on the job's final/ directory, with the tokenizer
  and chat template saved there, `apply_chat_template(add_generation_prompt=True)`, greedy, EOS stops;
- the serving engine (`Engine().chat`, what /v1/chat/completions calls) with the same adapter dir;
- the merged export (`export_merged`), loaded in plain transformers with no PEFT.
"""

from __future__ import annotations

import pytest
import torch

from tests.conftest import SMOLLM2, hf_greedy_ids

pytestmark = pytest.mark.e2e

QUESTIONS = ["Who are you?", "What is your name?", "Who created you?", "Please introduce yourself."]
MAX_NEW = 40


@pytest.fixture(scope="module")
def final_dir(tmp_path_factory):
    from tuneserve.data import count_examples
    from tuneserve.demo import identity_jsonl
    from tuneserve.training.run import train
    from tuneserve.training.spec import TrainingSpec, resolve_hyperparameters

    root = tmp_path_factory.mktemp("faithful")
    data = root / "identity.jsonl"
    # Every third example (31 of 91): 3 epochs of batch 4 are then 24 steps, a few minutes on a laptop CPU,
    # and enough for SmolLM2 to answer as Nova (one epoch over all 91 already does).
    lines = identity_jsonl("Nova", "Quill Labs").decode().splitlines()
    data.write_text("\n".join(lines[::3]) + "\n")
    hyperparameters = resolve_hyperparameters(
        {"n_epochs": 3, "batch_size": 4, "learning_rate_multiplier": "auto"}, count_examples(data)
    )
    # All 31 train (nothing held out, the last epoch kept): this test is about serving what training made.
    spec = TrainingSpec(
        model=SMOLLM2, training_file=str(data), hyperparameters=hyperparameters, seed=7, max_seq_length=256, validation_split=0
    )
    job_dir = root / "job"
    spec.write(job_dir)
    result = train(spec, job_dir)
    assert result["type"] == "result"
    return job_dir / "final"


def greedy_text(model, tokenizer, question: str) -> str:
    answer = hf_greedy_ids(model, tokenizer, question, MAX_NEW, eos_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(answer, skip_special_tokens=True)


@pytest.fixture(scope="module")
def trainer_side(final_dir):
    """Greedy answers beside the trainer: the base as training loads it, the adapter, the saved tokenizer."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneserve.models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(final_dir)
    base = AutoModelForCausalLM.from_pretrained(resolve_model(SMOLLM2), dtype=torch.float32)
    model = PeftModel.from_pretrained(base, final_dir).eval()
    return {q: greedy_text(model, tokenizer, q) for q in QUESTIONS}


def test_the_adapter_learned_the_identity(trainer_side):
    assert sum("Nova" in answer for answer in trainer_side.values()) >= 3, trainer_side


def test_served_greedy_answer_equals_the_trainer_side_answer(final_dir, trainer_side):
    from tuneserve.inference.engine import Engine, SamplingParams

    engine = Engine()
    try:
        served = {
            q: engine.chat(
                SMOLLM2, final_dir, [{"role": "user", "content": q}], SamplingParams(temperature=0, max_tokens=MAX_NEW)
            ).text
            for q in QUESTIONS
        }
    finally:
        engine.close()
    assert served == trainer_side


def test_merged_export_answers_the_same(final_dir, trainer_side, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneserve.export import export_merged

    out = export_merged(final_dir, SMOLLM2, tmp_path / "merged")
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(model).__name__ == "LlamaForCausalLM"
    merged = {q: greedy_text(model, AutoTokenizer.from_pretrained(out), q) for q in QUESTIONS}
    assert merged == trainer_side
