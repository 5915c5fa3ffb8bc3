"""Auto's held-out split and early stopping: the result is the checkpoint with the lowest validation loss."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tests.unit.training.conftest import NAMES, make_spec, read_events, tiny_conversations, write_jsonl
from tuneserve.training.early_stopping import Keeper, holdout_split
from tuneserve.training.spec import MIN_HOLDOUT


def test_holdout_is_a_tenth_drawn_the_same_for_every_seed(tmp_path):
    records = list(range(91))
    train, held = holdout_split(records, make_spec(tmp_path / "t.jsonl", seed=1, validation_split=0.1))
    assert len(held) == 9 and sorted(train + held) == records
    assert holdout_split(records, make_spec(tmp_path / "t.jsonl", seed=2, validation_split=0.1))[1] == held


def test_holdout_has_a_floor_and_stays_out_of_the_way(tmp_path):
    spec = make_spec(tmp_path / "t.jsonl", validation_split=0.1)
    assert len(holdout_split(list(range(25)), spec)[1]) == MIN_HOLDOUT  # 10% would be 2
    assert holdout_split(list(range(19)), spec) == (list(range(19)), [])  # too small to spare any
    given = make_spec(tmp_path / "t.jsonl", validation_file=str(tmp_path / "v.jsonl"), validation_split=0.1)
    assert holdout_split(list(range(91)), given)[1] == []
    assert holdout_split(list(range(91)), make_spec(tmp_path / "t.jsonl"))[1] == []  # the default: none


def test_keeper_keeps_the_lowest_and_stops_when_patience_is_spent():
    keeper = Keeper(patience=2)
    verdicts = [keeper.update(loss, step, epoch) for step, epoch, loss in [(4, 1, 3.0), (8, 2, 2.0), (12, 3, 2.5), (16, 4, 2.1)]]
    assert verdicts == ["improved", "improved", "wait", "stop"]
    assert (keeper.best.step, keeper.best.epoch, keeper.best.loss, keeper.best.evals_since) == (8, 2, 2.0, 2)
    assert "epoch 2 (step 8)" in keeper.explain(16, 4, stopped_early=True)
    assert Keeper(patience=0).active is False


# The validation losses the run is told it has, one per validation: lowest at the 3rd, then worse twice.
SCRIPTED_LOSSES = [3.0, 2.5, 2.0, 2.2, 2.4, 1.0, 0.5]


def scripted_evaluate(real_losses: list[float]):
    """SupervisedTask.evaluate with the periodic validation losses taken from SCRIPTED_LOSSES in turn (each real
    one is appended to `real_losses`); the end's full validation pass stays real."""
    from tuneserve.training.recipes.sft import SupervisedTask

    real_evaluate = SupervisedTask.evaluate

    def evaluate(self, forward, items, prefix):
        metrics = real_evaluate(self, forward, items, prefix)
        if prefix == "valid":
            real_losses.append(metrics["valid_loss"])
            metrics["valid_loss"] = SCRIPTED_LOSSES[len(real_losses) - 1]
        return metrics

    return evaluate


@pytest.fixture(scope="module")
def scripted_run(tmp_path_factory) -> dict:
    """A real run of the tiny model whose periodic validation losses are scripted (the logic under test is
    what the loop does with them; a random 2-layer model's real losses wander by noise), while the end's full
    validation pass is real, and every real periodic loss is recorded too."""
    from tuneserve.training.recipes.sft import SupervisedTask
    from tuneserve.training.run import train as run_training

    root = tmp_path_factory.mktemp("es")
    train = write_jsonl(root / "train.jsonl", tiny_conversations())
    valid = write_jsonl(root / "valid.jsonl", tiny_conversations()[:4])
    real_losses: list[float] = []
    evaluate = scripted_evaluate(real_losses)

    job_dir = root / "job"
    spec = make_spec(
        train,
        validation_file=str(valid),
        max_seq_length=64,
        n_evals=6,
        early_stopping_patience=2,
        hyperparameters={"n_epochs": 6},
    )
    spec.write(job_dir)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SupervisedTask, "evaluate", evaluate)
        result = run_training(spec, job_dir)
    return {"job_dir": job_dir, "result": result, "events": read_events(job_dir), "real_losses": real_losses}


def test_the_result_is_the_checkpoint_with_the_lowest_validation_loss(scripted_run):
    events, job_dir, result = scripted_run["events"], scripted_run["job_dir"], scripted_run["result"]
    valid = [(e["step"], e["epoch"]) for e in events if e["type"] == "metrics" and "valid_loss" in e]
    # 6 epochs x 4 steps, a validation (and so a checkpoint) each epoch; the 3rd is the best, and patience 2
    # stops the run after the 5th: the 6th, which would have been better, never runs.
    assert valid == [(4, 1), (8, 2), (12, 3), (16, 4), (20, 5)]
    kept = result["kept_checkpoint"]
    assert (kept["step"], kept["epoch"], kept["valid_loss"], kept["stopped_early"]) == (12, 3, 2.0, True)
    assert max(e["step"] for e in events if e["type"] == "metrics") == 20
    final = load_file(job_dir / "final" / "adapter_model.safetensors")
    best = load_file(job_dir / "checkpoints" / "step-12" / "adapter_model.safetensors")
    last = load_file(job_dir / "checkpoints" / "step-20" / "adapter_model.safetensors")
    assert final.keys() == best.keys() and all((final[k] == best[k]).all() for k in final)
    assert any((final[k] != last[k]).any() for k in final)
    # The full validation pass scores the kept weights, not the last ones: it repeats the 3rd real loss.
    full = next(e for e in events if e["type"] == "metrics" and "full_valid_loss" in e)
    assert full["step"] == 12 and full["full_valid_loss"] == pytest.approx(scripted_run["real_losses"][2], rel=1e-5)
    assert full["full_valid_loss"] != pytest.approx(scripted_run["real_losses"][4], rel=1e-5)
    messages = [e["message"] for e in events if e["type"] == "message"]
    assert any(m.startswith("Stopping early at step 20 of 24: 2 validation(s) in a row") for m in messages)
    assert any(m.startswith("Kept the checkpoint of epoch 3 (step 12), the lowest validation loss 2.0000") for m in messages)


def friends() -> list[list[dict[str, str]]]:
    """32 one-turn conversations: who each of NAMES (twice over) is."""
    return [
        [{"role": "user", "content": f"Who is {n}{i}?"}, {"role": "assistant", "content": f"{n}{i} is a friend of Nova."}]
        for i in range(2)
        for n in NAMES
    ]


def train_on_friends(tmp_path: Path, **fields) -> tuple:
    """(spec, result, events) of a run on friends() with a 10% split held out and these spec fields."""
    from tuneserve.training.run import train as run_training

    spec = make_spec(write_jsonl(tmp_path / "train.jsonl", friends()), max_seq_length=64, validation_split=0.1, **fields)
    spec.write(tmp_path / "job")
    return spec, run_training(spec, tmp_path / "job"), read_events(tmp_path / "job")


def test_without_validation_data_a_split_is_held_out_when_asked(tmp_path):
    _spec, result, events = train_on_friends(tmp_path, early_stopping_patience=2, hyperparameters={"n_epochs": 2})
    messages = [e["message"] for e in events if e["type"] == "message"]
    assert any(m.startswith("Held out 4 of 32 training examples") for m in messages)
    assert any("Training on 28 examples (4 validation)" in m for m in messages)
    assert sum(1 for e in events if e["type"] == "metrics" and "valid_loss" in e) == 2  # once per epoch
    assert result["kept_checkpoint"]["epoch"] in (1, 2)
    assert json.loads(Path(tmp_path / "job" / "spec.json").read_text())["validation_split"] == 0.1


def test_a_paused_run_resumes_with_its_best_and_its_patience_so_far(tmp_path):
    """Paused after the 4th validation (one without improvement), the resumed run still stops after the 5th and
    keeps the 3rd: the best validation and the count since it are in the checkpoint."""
    from tuneserve.training.recipes.sft import SupervisedTask
    from tuneserve.training.run import train as run_training

    train = write_jsonl(tmp_path / "train.jsonl", tiny_conversations())
    valid = write_jsonl(tmp_path / "valid.jsonl", tiny_conversations()[:4])
    calls: list[float] = []
    evaluate = scripted_evaluate(calls)

    spec = make_spec(
        train, validation_file=str(valid), max_seq_length=64, early_stopping_patience=2, hyperparameters={"n_epochs": 6}
    )
    job_dir = tmp_path / "job"
    spec.write(job_dir)
    steps = iter(range(1, 100))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SupervisedTask, "evaluate", evaluate)
        assert run_training(spec, job_dir, stop_requested=lambda: next(steps) == 16)["type"] == "stopped"
        result = run_training(spec, job_dir)
    assert len(calls) == 5  # 4 before the pause, 1 after: patience spent at step 20
    assert (result["kept_checkpoint"]["step"], result["kept_checkpoint"]["stopped_early"]) == (12, True)
    final = load_file(job_dir / "final" / "adapter_model.safetensors")
    best = load_file(job_dir / "checkpoints" / "step-12" / "adapter_model.safetensors")
    assert all((final[k] == best[k]).all() for k in final)


def test_rouge_l_f1_of_token_sequences():
    from tuneserve.training.recipes.sft import rouge_l_f1

    assert rouge_l_f1([1, 2, 3], [1, 2, 3]) == 1.0
    assert rouge_l_f1([1, 9, 3], [1, 2, 3]) == pytest.approx(2 * 2 / 6)  # common subsequence 1, 3
    assert rouge_l_f1([3, 2, 1], [1, 2, 3]) == pytest.approx(2 * 1 / 6)  # order matters
    assert rouge_l_f1([], [1]) == 0.0 and rouge_l_f1([5], [1]) == 0.0


def test_keeper_judged_by_answers_keeps_the_highest():
    keeper = Keeper(patience=1, metric="answers")
    assert keeper.key == "valid_answer_rouge_l"
    assert [keeper.update(v, s, e) for s, e, v in [(4, 1, 0.2), (8, 2, 0.6), (12, 3, 0.5)]] == ["improved", "improved", "stop"]
    assert keeper.best.step == 8
    assert "the highest held-out answer ROUGE-L 0.6000" in keeper.explain(12, 3, stopped_early=True)


def test_answers_are_for_supervised_jobs(tmp_path):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="supervised jobs only, not dpo"):
        make_spec(tmp_path / "t.jsonl", method="dpo", early_stopping_metric="answers")
    assert make_spec(tmp_path / "t.jsonl", early_stopping_metric="answers").early_stopping_metric == "answers"


def test_answers_are_the_models_own_greedy_answers_and_judge_the_run(tmp_path, tokenizer):
    """early_stopping_metric "answers": each validation generates the held-out answers, the score is ROUGE-L F1
    against the references, and the kept checkpoint is the best by it. The generation is checked against
    transformers' own greedy decoding of the kept checkpoint."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tests.conftest import TINY, hf_greedy_ids
    from tuneserve.models import resolve_model
    from tuneserve.training.recipes.sft import rouge_l_f1

    spec, result, events = train_on_friends(
        tmp_path,
        early_stopping_patience=3,
        early_stopping_metric="answers",
        hyperparameters={"n_epochs": 3, "learning_rate_multiplier": 10},
    )
    scores = [e["valid_answer_rouge_l"] for e in events if e["type"] == "metrics" and "valid_answer_rouge_l" in e]
    assert len(scores) == 3 and all(0 <= s <= 1 for s in scores)
    kept = result["kept_checkpoint"]
    assert kept["valid_answer_rouge_l"] == max(scores) and "held-out answer ROUGE-L" in kept["reason"]

    # The score of the kept checkpoint, recomputed from transformers' greedy answers to the held-out prompts.
    from tuneserve.training.early_stopping import holdout_split

    held = holdout_split(friends(), spec)[1]
    base = AutoModelForCausalLM.from_pretrained(resolve_model(TINY), dtype=torch.float32)
    model = PeftModel.from_pretrained(base, tmp_path / "job" / kept["path"]).eval()
    recomputed = []
    for conversation in held:
        reference = tokenizer(conversation[1]["content"] + "<|im_end|>", add_special_tokens=False)["input_ids"]
        answer = hf_greedy_ids(model, tokenizer, conversation[0]["content"], len(reference) + 16)
        recomputed.append(rouge_l_f1(answer, reference))
    assert sum(recomputed) / len(recomputed) == pytest.approx(kept["valid_answer_rouge_l"], abs=0.01)
