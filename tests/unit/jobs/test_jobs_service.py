"""JobService over real stores: create (resolve into a TrainingSpec, queue), read, list, cancel."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError
from sqlalchemy import select, update

from tuneserve.errors import Conflict, InvalidRequest, NotFound
from tuneserve.jobs import states
from tuneserve.jobs.names import checkpoint_model_name
from tuneserve.jobs.requests import JobRequest
from tuneserve.jobs.service import checkpoint_name_for, model_name_for
from tuneserve.store.tables import Job, JobEvent
from tuneserve.training.spec import BASE_LEARNING_RATE, TrainingSpec, resolve_hyperparameters

TINY = "tuneserve/tiny-random"


def request(training_file, **extra):
    return JobRequest(**{"model": TINY, "training_file": training_file, **extra})


def job_rows(sessions):
    with sessions() as session:
        return list(session.scalars(select(Job)))


def test_create_queues_a_resolved_job(jobs, files, training_file, jobs_dir, sessions):
    job = jobs.create("proj", request(training_file.id, hyperparameters={"n_epochs": "auto", "batch_size": "auto"}))

    assert job.id.startswith("ftjob-")
    # Created jobs wait in validating_files; the scheduler checks the files with the tokenizer, then queues them.
    assert (job.status, job.model, job.training_file, job.project) == (states.VALIDATING, TINY, training_file.id, "proj")
    # "auto" became numbers, the ones the resolver gives for this file's size
    expected = resolve_hyperparameters({}, training_file.n_examples)
    assert job.hyperparameters == {
        "n_epochs": expected.n_epochs,
        "batch_size": expected.batch_size,
        "learning_rate_multiplier": expected.learning_rate_multiplier,
    }
    assert isinstance(job.hyperparameters["n_epochs"], int) and isinstance(job.hyperparameters["batch_size"], int)
    assert job.method == {"type": "supervised", "supervised": {"hyperparameters": job.hyperparameters}}

    # spec.json in the job dir, pointing at the stored blob (not the user's filename)
    spec_path = jobs_dir / job.id / "spec.json"
    assert spec_path.is_file()
    spec = TrainingSpec.read(jobs_dir / job.id)
    _, blob = files.content_path("proj", training_file.id)
    assert spec.training_file == str(blob)
    assert spec.model == TINY and spec.init_adapter is None and spec.validation_file is None
    assert spec.hyperparameters == expected
    assert json.loads(spec_path.read_text()) == job.spec

    # and the database says the same
    stored = jobs.get("proj", job.id)
    assert (stored.status, stored.hyperparameters, stored.spec, stored.seed) == (
        states.VALIDATING,
        job.hyperparameters,
        job.spec,
        job.seed,
    )
    assert 0 <= stored.seed < 2**31


@pytest.mark.parametrize("form", ["top_level", "method"])
def test_both_hyperparameter_forms(jobs, training_file, jobs_dir, form):
    hp = {"n_epochs": 2, "batch_size": 8, "learning_rate_multiplier": 0.5}
    if form == "top_level":
        req = request(training_file.id, hyperparameters=hp)
    else:
        req = request(training_file.id, method={"type": "supervised", "supervised": {"hyperparameters": hp}})
    job = jobs.create("proj", req)
    assert job.hyperparameters == hp
    assert job.method["supervised"]["hyperparameters"] == hp
    spec = TrainingSpec.read(jobs_dir / job.id)
    assert (spec.hyperparameters.n_epochs, spec.hyperparameters.batch_size) == (2, 8)
    assert spec.hyperparameters.learning_rate == pytest.approx(BASE_LEARNING_RATE[("supervised", "lora")] * 0.5)


def test_method_hyperparameters_win_and_nulls_are_ignored(jobs, training_file):
    job = jobs.create(
        "proj",
        request(
            training_file.id,
            hyperparameters={"n_epochs": 7, "batch_size": 4},
            method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": None}}},
        ),
    )
    assert (job.hyperparameters["n_epochs"], job.hyperparameters["batch_size"]) == (2, 4)


def test_unsupported_method(jobs, training_file, sessions):
    with pytest.raises(InvalidRequest) as info:
        jobs.create("proj", request(training_file.id, method={"type": "reinforcement"}))
    assert (info.value.code, info.value.param) == ("unsupported_method", "method.type")
    assert job_rows(sessions) == []


def test_dpo_needs_preference_data(jobs, training_file, sessions):
    with pytest.raises(InvalidRequest) as info:
        jobs.create("proj", request(training_file.id, method={"type": "dpo"}))
    assert (info.value.code, info.value.param) == ("unsupported_data_for_method", "training_file")
    assert "preference pairs" in info.value.message
    assert job_rows(sessions) == []


def test_idempotency_key_returns_the_same_job(jobs, training_file, sessions):
    first = jobs.create("proj", request(training_file.id), idempotency_key="key-1")
    again = jobs.create("proj", request(training_file.id, hyperparameters={"n_epochs": 9}), idempotency_key="key-1")
    other = jobs.create("proj", request(training_file.id), idempotency_key="key-2")
    assert again.id == first.id and again.hyperparameters == first.hyperparameters
    assert other.id != first.id
    assert len(job_rows(sessions)) == 2


def test_training_file_by_name(jobs, files, training_file):
    job = jobs.create("proj", request("train.jsonl"))
    assert job.training_file == training_file.id


def test_validation_file(jobs, files, training_file, jobs_dir):
    valid = files.create_bytes("proj", "valid.jsonl", "fine-tune", b'{"prompt": "p", "completion": "c"}\n')
    job = jobs.create("proj", request(training_file.id, validation_file=valid.id, seed=1234, suffix="mine"))
    assert (job.validation_file, job.seed, job.suffix) == (valid.id, 1234, "mine")
    spec = TrainingSpec.read(jobs_dir / job.id)
    assert spec.validation_file == str(files.content_path("proj", valid.id)[1]) and spec.seed == 1234


def test_unknown_model(jobs, training_file, jobs_dir, sessions):
    with pytest.raises(NotFound) as info:
        jobs.create("proj", request(training_file.id, model="no-such-model-anywhere"))
    assert (info.value.code, info.value.param, info.value.status) == ("model_not_found", "model", 404)
    with pytest.raises(NotFound) as info:
        jobs.create("proj", request(training_file.id, model="ft:tuneserve/tiny-random:proj::doesnotexist"))
    assert info.value.code == "model_not_found"
    assert job_rows(sessions) == []
    assert not jobs_dir.exists() or list(jobs_dir.iterdir()) == []


@pytest.mark.parametrize("param", ["training_file", "validation_file"])
def test_unknown_file(jobs, training_file, sessions, param):
    req = request(**{"training_file": training_file.id, param: "file-doesnotexist"})
    with pytest.raises(NotFound) as info:
        jobs.create("proj", req)
    assert (info.value.code, info.value.param) == ("file_not_found", param)
    assert job_rows(sessions) == []


def test_file_of_another_project_is_not_found(jobs, training_file):
    with pytest.raises(NotFound):
        jobs.create("other-proj", request(training_file.id))


def test_results_file_is_not_training_data(jobs, files, sessions):
    results = files.create_bytes("proj", "step_metrics.csv", "fine-tune-results", b"step,train_loss\n1,2.0\n")
    with pytest.raises(InvalidRequest) as info:
        jobs.create("proj", request(results.id))
    assert info.value.param == "training_file"
    assert "fine-tune-results" in info.value.message
    assert job_rows(sessions) == []


@pytest.mark.parametrize(
    "hp, param",
    [
        ({"n_epochs": 0}, "hyperparameters.n_epochs"),
        ({"batch_size": 100_000}, "hyperparameters.batch_size"),
        ({"learning_rate_multiplier": -1}, "hyperparameters.learning_rate_multiplier"),
    ],
)
def test_out_of_range_hyperparameters(hp, param):
    # The request itself refuses them (its limits are the training spec's): no job can be asked for.
    with pytest.raises(ValidationError) as info:
        request("file-x", hyperparameters=hp)
    assert ".".join(str(p) for p in info.value.errors()[0]["loc"][:2]) == param


def events_of(jobs, job_id, **kw):
    rows, has_more = jobs.events("proj", job_id, **kw)
    return [e.message for e in rows], has_more


def test_events_newest_first(jobs, training_file):
    job = jobs.create("proj", request(training_file.id))
    jobs.cancel("proj", job.id)
    messages, has_more = events_of(jobs, job.id)
    assert has_more is False
    assert messages == ["Fine-tuning job cancelled", f"Validating training file: {training_file.id}"]
    rows, has_more = jobs.events("proj", job.id, limit=1)
    assert [e.message for e in rows] == messages[:1] and has_more is True
    rows, has_more = jobs.events("proj", job.id, limit=5, after=rows[0].id)
    assert [e.message for e in rows] == messages[1:] and has_more is False
    assert all(e.id.startswith("ftevent-") and e.job_id == job.id for e in rows)


def test_cancel_queued_job(jobs, training_file, sessions):
    job = jobs.create("proj", request(training_file.id))
    cancelled = jobs.cancel("proj", job.id)
    assert cancelled.status == states.CANCELLED
    assert cancelled.finished_at is not None and cancelled.estimated_finish is None
    assert jobs.get("proj", job.id).status == states.CANCELLED
    messages, _ = events_of(jobs, job.id)
    assert messages == ["Fine-tuning job cancelled", f"Validating training file: {training_file.id}"]

    again = jobs.cancel("proj", job.id)  # cancelling twice is harmless
    assert again.status == states.CANCELLED
    assert events_of(jobs, job.id)[0] == messages


def test_cancel_finished_job_is_refused(jobs, training_file, sessions):
    job = jobs.create("proj", request(training_file.id))
    with sessions.begin() as session:
        session.execute(update(Job).where(Job.id == job.id).values(status=states.SUCCEEDED))
    with pytest.raises(Conflict) as info:
        jobs.cancel("proj", job.id)
    assert (info.value.status, info.value.code) == (409, "job_not_cancellable")
    assert jobs.get("proj", job.id).status == states.SUCCEEDED


def test_get_and_cancel_unknown_or_foreign_job(jobs, training_file):
    job = jobs.create("proj", request(training_file.id))
    for call in (
        lambda: jobs.get("proj", "ftjob-nope"),
        lambda: jobs.get("other-proj", job.id),
        lambda: jobs.cancel("other-proj", job.id),
        lambda: jobs.events("other-proj", job.id),
    ):
        with pytest.raises(NotFound) as info:
            call()
        assert info.value.code == "job_not_found"
    assert jobs.get("proj", job.id).status == states.VALIDATING


def test_list_pagination(jobs, files, training_file):
    created = [jobs.create("proj", request(training_file.id, metadata={"n": str(i % 2)})).id for i in range(5)]
    other_file = files.create_bytes("other-proj", "t.jsonl", "fine-tune", b'{"prompt": "p", "completion": "c"}\n' * 10)
    jobs.create("other-proj", request(other_file.id))
    newest_first = created[::-1]

    seen, after, shape = [], None, []
    while True:
        rows, has_more = jobs.list("proj", limit=2, after=after)
        seen += [r.id for r in rows]
        shape.append((len(rows), has_more))
        if not has_more:
            break
        after = rows[-1].id
    assert seen == newest_first
    assert shape == [(2, True), (2, True), (1, False)]

    rows, has_more = jobs.list("proj", limit=20)
    assert ([r.id for r in rows], has_more) == (newest_first, False)
    rows, has_more = jobs.list("proj", metadata={"n": "0"}, limit=2)
    assert ([r.id for r in rows], has_more) == ([created[4], created[2]], True)


def test_continue_from_a_fine_tuned_model(jobs, training_file, sessions, jobs_dir):
    first = jobs.create("proj", request(training_file.id, suffix="v1"))
    name = model_name_for(first)
    with sessions.begin() as session:
        session.execute(update(Job).where(Job.id == first.id).values(status=states.SUCCEEDED, fine_tuned_model=name))

    second = jobs.create("proj", request(training_file.id, model=name))
    spec = TrainingSpec.read(jobs_dir / second.id)
    assert spec.model == TINY
    assert spec.init_adapter == str(jobs_dir / first.id / "final")
    assert second.model == name

    # a checkpoint that was never recorded is not a model
    with pytest.raises(NotFound) as info:
        jobs.create("proj", request(training_file.id, model=checkpoint_model_name(name, 10)))
    assert info.value.code == "model_not_found"
    assert checkpoint_name_for(first, 10) == checkpoint_model_name(name, 10)


def test_events_are_stored_in_the_events_table(jobs, training_file, sessions):
    job = jobs.create("proj", request(training_file.id))
    with sessions() as session:
        levels = list(session.scalars(select(JobEvent.level).where(JobEvent.job_id == job.id)))
    assert levels == ["info"]


# create() maps every bad value (hyperparameters, LoraSpec, TrainingSpec, unparsable numbers) to a 400;
# reachable through the OPEA body (Dataset.max_length, General.lora_config, Training.num_training_workers).
@pytest.mark.parametrize(
    "extra",
    [
        {"max_seq_length": 8},
        {"lora": {"r": 0}},
        {"num_workers": 0},
    ],
    ids=["max_seq_length", "lora.r", "num_workers"],
)
def test_bad_spec_values_are_invalid_requests(jobs, training_file, extra):
    with pytest.raises(InvalidRequest):
        jobs.create("proj", request(training_file.id, **extra))


def test_fewer_than_10_examples_or_preference_data_are_refused(jobs, files):
    small = files.create_bytes("proj", "small.jsonl", "fine-tune", b'{"prompt": "p", "completion": "c"}\n' * 9)
    with pytest.raises(InvalidRequest) as info:
        jobs.create("proj", request(small.id))
    assert info.value.code == "too_few_examples" and info.value.param == "training_file"
    pair = b'{"prompt": "p", "chosen": "good", "rejected": "bad"}\n'
    prefs = files.create_bytes("proj", "prefs.jsonl", "fine-tune", pair * 12)
    assert prefs.kind == "preference"
    with pytest.raises(InvalidRequest) as info:
        jobs.create("proj", request(prefs.id))
    assert info.value.code == "unsupported_data_for_method"
