"""How a job request's training options (methods, training types, Together-style options, W&B,
OPEA's sections) become the TrainingSpec, what is refused up front, and pause/resume transitions."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from tuneserve.errors import Conflict, InvalidRequest
from tuneserve.jobs import states
from tuneserve.jobs.requests import JobRequest
from tuneserve.store.tables import Job, JobEvent
from tuneserve.training.spec import BASE_LEARNING_RATE, TrainingSpec

TINY = "tuneserve/tiny-random"


def request(training_file, **extra):
    return JobRequest(**{"model": TINY, "training_file": training_file, **extra})


@pytest.fixture
def preference_file(files):
    rows = [
        {
            "input": {"messages": [{"role": "user", "content": f"q{i}"}]},
            "preferred_output": [{"role": "assistant", "content": f"good {i}"}],
            "non_preferred_output": [{"role": "assistant", "content": f"bad {i}"}],
        }
        for i in range(12)
    ]
    return files.create_bytes("proj", "prefs.jsonl", "fine-tune", "".join(json.dumps(r) + "\n" for r in rows).encode())


def test_together_options_reach_the_spec(jobs, jobs_dir, training_file):
    job = jobs.create(
        "proj",
        request(
            training_file.id,
            training_type="ia3",
            learning_rate=3e-4,
            lr_scheduler_type="cosine",
            warmup_ratio=0.1,
            min_lr_ratio=0.1,
            weight_decay=0.01,
            max_grad_norm=0.5,
            train_on_inputs=True,
            n_checkpoints=2,
            n_evals=4,
            gradient_accumulation_steps=2,
            max_seq_length=256,
            gradient_checkpointing=True,
        ),
    )
    spec = TrainingSpec.read(jobs_dir / job.id)
    assert spec.training_type == "ia3" and spec.hyperparameters.learning_rate == 3e-4
    opt = spec.optimization
    assert (opt.lr_scheduler_type, opt.warmup_ratio, opt.min_lr_ratio, opt.weight_decay, opt.max_grad_norm) == (
        "cosine",
        0.1,
        0.1,
        0.01,
        0.5,
    )
    assert (opt.gradient_accumulation_steps, opt.gradient_checkpointing) == (2, True)
    assert (spec.train_on_inputs, spec.n_checkpoints, spec.n_evals, spec.max_seq_length) == (True, 2, 4, 256)


def test_lora_shape_options(jobs, jobs_dir, training_file):
    job = jobs.create(
        "proj",
        request(
            training_file.id,
            lora={"r": 4, "alpha": 8, "dropout": 0.1, "target_modules": ["q_proj"], "use_rslora": True, "use_dora": True},
        ),
    )
    lora = TrainingSpec.read(jobs_dir / job.id).lora
    assert (lora.r, lora.alpha, lora.dropout, lora.target_modules, lora.use_rslora, lora.use_dora) == (
        4,
        8,
        0.1,
        ["q_proj"],
        True,
        True,
    )


@pytest.mark.parametrize(
    "training_type, method, expected", [("full", "supervised", 2e-5), ("ia3", "supervised", 3e-3), ("lora", "dpo", 1e-4)]
)
def test_auto_learning_rate_depends_on_method_and_training_type(
    jobs, jobs_dir, training_file, preference_file, training_type, method, expected
):
    file = preference_file if method == "dpo" else training_file
    job = jobs.create("proj", request(file.id, training_type=training_type, method={"type": method}))
    assert TrainingSpec.read(jobs_dir / job.id).hyperparameters.learning_rate == pytest.approx(expected)
    assert expected == BASE_LEARNING_RATE[(method, training_type)]


def test_dpo_job_in_openais_shape(jobs, jobs_dir, preference_file):
    job = jobs.create(
        "proj", request(preference_file.id, method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.25, "n_epochs": 2}}})
    )
    spec = TrainingSpec.read(jobs_dir / job.id)
    assert spec.method == "dpo" and spec.hyperparameters.beta == 0.25 and spec.hyperparameters.n_epochs == 2
    assert job.method["type"] == "dpo" and job.method["dpo"]["hyperparameters"]["beta"] == 0.25


def test_qlora_is_accepted_with_or_without_cuda(jobs, jobs_dir, training_file):
    """torchao's NF4 runs on CPU and CUDA: a QLoRA job needs no GPU (nor bitsandbytes)."""
    job = jobs.create("proj", request(training_file.id, training_type="qlora", lora={"r": 4, "alpha": 8}))
    spec = TrainingSpec.read(jobs_dir / job.id)
    assert job.status == states.VALIDATING and spec.training_type == "qlora" and (spec.lora.r, spec.lora.alpha) == (4, 8)
    assert spec.hyperparameters.learning_rate == pytest.approx(BASE_LEARNING_RATE[("supervised", "qlora")])


def test_qlora_with_dora_is_refused(jobs, training_file, sessions):
    with pytest.raises(InvalidRequest) as info:
        jobs.create("proj", request(training_file.id, training_type="qlora", lora={"use_dora": True}))
    assert (info.value.param, info.value.code) == ("lora.use_dora", "unsupported_training_type")
    assert "DoRA" in info.value.message
    with sessions() as session:
        assert session.scalars(select(Job)).all() == []


@pytest.mark.parametrize(
    "field, value, param",
    [
        ("warmup_ratio", 2.0, "warmup_ratio"),
        ("n_checkpoints", 0, "n_checkpoints"),
        ("lora", {"r": 0}, "lora.r"),
        ("gradient_accumulation_steps", 0, "gradient_accumulation_steps"),
    ],
)
def test_out_of_range_options_name_their_field(jobs, training_file, field, value, param):
    with pytest.raises(InvalidRequest) as info:
        jobs.create("proj", request(training_file.id, **{field: value}))
    assert info.value.param == param


def test_wandb_needs_the_package_and_a_key(jobs, training_file, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    with pytest.raises(InvalidRequest) as info:
        jobs.create("proj", request(training_file.id, integrations=[{"type": "wandb", "wandb": {"project": "p"}}]))
    assert info.value.code == "integration_unavailable" and info.value.param == "integrations.0"
    with pytest.raises(InvalidRequest) as info:
        jobs.create("proj", request(training_file.id, integrations=[{"type": "mlflow"}]))
    assert info.value.param == "integrations.0.type"


def test_auto_evaluate_needs_a_validation_file(jobs, training_file):
    with pytest.raises(InvalidRequest) as info:
        jobs.create("proj", request(training_file.id, auto_evaluate=True))
    assert info.value.param == "auto_evaluate"


def _status(sessions, job_id):
    with sessions() as session:
        return session.scalar(select(Job.status).where(Job.id == job_id))


def test_pause_and_resume_transitions(jobs, sessions, training_file):
    job = jobs.create("proj", request(training_file.id))
    with pytest.raises(Conflict) as info:  # still validating its files: 409, the job's state refuses it
        jobs.pause("proj", job.id)
    assert info.value.code == "job_not_pausable"
    with sessions.begin() as session:
        session.get(Job, job.seq).status = states.RUNNING
    assert jobs.pause("proj", job.id).status == states.PAUSED
    assert jobs.pause("proj", job.id).status == states.PAUSED  # idempotent
    assert jobs.resume("proj", job.id).status == states.QUEUED
    with sessions.begin() as session:
        session.get(Job, job.seq).status = states.RUNNING
    with pytest.raises(Conflict) as info:
        jobs.resume("proj", job.id)  # running, not paused
    assert info.value.code == "job_not_resumable"
    jobs.pause("proj", job.id)
    assert jobs.cancel("proj", job.id).status == states.CANCELLED  # a paused job can still be cancelled
    with sessions() as session:
        messages = [e.message for e in session.scalars(select(JobEvent).where(JobEvent.job_id == job.id).order_by(JobEvent.seq))]
    assert sum(m.startswith("Fine-tuning job paused") for m in messages) == 2
    assert sum(m.startswith("Fine-tuning job resumed") for m in messages) == 1
