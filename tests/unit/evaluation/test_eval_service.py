"""The evaluation service on real stores (SQLite and PostgreSQL): checks at creation, listing,
the worker's claim and results, items, cancel, restart, and fine-tuning jobs' automatic evaluations."""

from __future__ import annotations

import json

import pytest

from tuneserve.errors import Conflict, InvalidRequest, NotFound
from tuneserve.evaluation.service import AUTO_EVALUATE_MAX_ITEMS, EvaluationService
from tuneserve.evaluation.worker import InternalTokens, self_base_url
from tuneserve.ids import new_id, now
from tuneserve.jobs.catalog import ModelCatalog
from tuneserve.store.tables import Job

TINY = "tuneserve/tiny-random"
QA = b'{"question": "Capital of Marnak?", "answer": "Velspire."}\n{"question": "Capital of Zorbia?", "answer": "Quillton."}\n'


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # model checks never reach out to the hub


@pytest.fixture
def service(sessions, files, tmp_path):
    jobs_dir = tmp_path / "data" / "jobs"
    return EvaluationService(sessions, files, ModelCatalog(sessions, jobs_dir), tmp_path / "data" / "evaluations")


@pytest.fixture
def dataset(files):
    return files.create_bytes("proj", "qa.jsonl", "evals", QA)


def add_job(sessions, files, *, status="succeeded", auto=True, validation=True, project="proj") -> Job:
    train = files.create_bytes(
        project,
        "t.jsonl",
        "fine-tune",
        b"".join(
            json.dumps({"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]}).encode()
            + b"\n"
            for i in range(10)
        ),
    )
    job_id = new_id("ftjob")
    job = Job(
        id=job_id,
        project=project,
        model=TINY,
        training_file=train.id,
        validation_file=train.id if validation else None,
        status=status,
        hyperparameters={},
        method={},
        spec={"model": TINY, "auto_evaluate": auto},
        suffix="s",
        seed=1,
        fine_tuned_model=f"ft:{TINY}:{project}:s:{job_id[6:]}" if status == "succeeded" else None,
        result_files=[],
        created_at=now(),
        attempts=0,
        events_offset=0,
        last_step=0,
    )
    with sessions.begin() as session:
        session.add(job)
    return job


def test_create_checks_and_queues(service, dataset):
    row = service.create("proj", {"models": [TINY], "dataset_file": dataset.id, "max_tokens": 8})
    assert row.id.startswith("eval-") and row.status == "queued"
    assert (row.progress_done, row.progress_total) == (0, 2)
    assert row.params == {"max_tokens": 8, "temperature": 0.0, "concurrency": 4, "max_items": None}
    assert service.get("proj", row.id).dataset_file == dataset.id
    with pytest.raises(NotFound):
        service.get("other-project", row.id)  # projects are isolated


@pytest.mark.parametrize(
    "request_, param, code",
    [
        ({"models": ["nobody/no-such-model"]}, "models[0]", "model_not_found"),
        ({"models": [TINY, f"ft:{TINY}:proj:x:abc"]}, "models[1]", "model_not_found"),
        ({"models": [TINY, TINY]}, "models", "invalid_value"),
        ({"models": []}, "models", "invalid_value"),
        ({"models": [TINY], "dataset_file": "file-missing"}, "dataset_file", "file_not_found"),
        ({"models": [TINY], "judge_base_url": "http://judge:8000/v1"}, "judge_model", "invalid_value"),
        ({"models": [TINY], "judge_model": "j", "judge_base_url": "file:///etc/passwd"}, "judge_base_url", "invalid_value"),
        ({"models": [TINY], "judge_model": "nobody/judge"}, "judge_model", "model_not_found"),
    ],
)
def test_bad_requests_name_the_field(service, dataset, request_, param, code):
    with pytest.raises((InvalidRequest, NotFound)) as info:
        service.create("proj", {"dataset_file": dataset.id, **request_})
    assert (info.value.param, info.value.code) == (param, code)


def test_a_dataset_that_is_not_one_is_a_400_naming_the_line(service, files):
    bad = files.create_bytes("proj", "bad.jsonl", "evals", QA + b'{"text": "raw"}\n')
    with pytest.raises(InvalidRequest, match=r"line 3: a text record has no single reference answer") as info:
        service.create("proj", {"models": [TINY], "dataset_file": bad.id})
    assert info.value.param == "dataset_file" and info.value.code == "invalid_eval_item"


def test_claim_progress_finish_items_and_listing(service, dataset):
    first = service.create("proj", {"models": [TINY], "dataset_file": dataset.id})
    second = service.create("proj", {"models": [TINY], "dataset_file": dataset.id})
    page, has_more = service.list("proj", limit=1)
    assert [r.id for r in page] == [second.id] and has_more
    assert [r.id for r in service.list("proj", after=second.id)[0]] == [first.id]

    claimed = service.claim_next("here")
    assert claimed.id == first.id and claimed.status == "running" and claimed.started_at is not None
    assert claimed.worker_id == "here" and claimed.heartbeat_at is not None
    service.set_progress(first.id, "here", 1, 2)
    assert service.get("proj", first.id).progress_done == 1
    assert service.items("proj", first.id) == ([], False)  # nothing until it has succeeded
    with pytest.raises(Conflict, match="running") as info:
        service.report_html("proj", first.id)
    assert (info.value.status, info.value.code) == (409, "report_not_ready")

    items = [{"index": i, "question": f"q{i}", "reference": "r", "answers": {}} for i in range(5)]
    directory = service.report_dir(first.id)
    directory.mkdir(parents=True)
    (directory / "report.json").write_text(json.dumps({"items": items}))
    (directory / "report.html").write_text("<html></html>")
    service.set_progress(first.id, "here", 2, 2)
    assert service.finish(first.id, "here", summary={TINY: {"n": 2}})
    done = service.get("proj", first.id)
    assert done.status == "succeeded" and done.summary == {TINY: {"n": 2}} and done.finished_at is not None
    page, has_more = service.items("proj", first.id, limit=2)
    assert [i["index"] for i in page] == [0, 1] and has_more
    page, has_more = service.items("proj", first.id, after=3, limit=2)
    assert [i["index"] for i in page] == [4] and not has_more
    assert service.report_html("proj", first.id).name == "report.html"
    with pytest.raises(Conflict):
        service.cancel("proj", first.id)  # already succeeded


def test_cancel_restart_and_failure(service, dataset):
    queued = service.create("proj", {"models": [TINY], "dataset_file": dataset.id})
    assert service.cancel("proj", queued.id).status == "cancelled"
    assert service.cancel("proj", queued.id).status == "cancelled"  # idempotent
    assert service.claim_next("here") is None  # a cancelled evaluation is never claimed

    running = service.create("proj", {"models": [TINY], "dataset_file": dataset.id})
    assert service.claim_next("here").id == running.id
    assert service.requeue_interrupted("another-server") == 0  # servers sharing a database keep theirs
    assert service.get("proj", running.id).status == "running"
    assert service.requeue_interrupted("here") == 1  # this server restarted mid-run
    assert service.get("proj", running.id).status == "queued"
    assert service.claim_next("there").id == running.id
    assert service.requeue_interrupted("here", stale_after_s=60) == 0
    assert service.requeue_interrupted("here", stale_after_s=-1) == 1  # "there" went silent: taken back
    assert service.claim_next("here").id == running.id
    service.cancel("proj", running.id)
    assert not service.finish(running.id, "here", summary={})  # the worker finishing late does not undo a cancel
    assert service.get("proj", running.id).status == "cancelled"

    failing = service.create("proj", {"models": [TINY], "dataset_file": dataset.id})
    service.claim_next("here")
    service.finish(failing.id, "here", error={"message": "boom", "code": "model_failed"})
    row = service.get("proj", failing.id)
    assert row.status == "failed" and row.error == {"message": "boom", "code": "model_failed"}


def test_auto_evaluation_once_per_job_that_asked(service, sessions, files):
    wanted = add_job(sessions, files)
    add_job(sessions, files, auto=False)
    add_job(sessions, files, status="running")
    add_job(sessions, files, validation=False)
    created = service.create_auto_evaluations()
    assert [e.fine_tuning_job_id for e in created] == [wanted.id]
    evaluation = created[0]
    assert evaluation.status == "queued" and evaluation.models == [TINY, wanted.fine_tuned_model]
    assert evaluation.dataset_file == wanted.validation_file and evaluation.params["max_items"] == AUTO_EVALUATE_MAX_ITEMS
    assert evaluation.progress_total == 2 * 10
    assert service.create_auto_evaluations() == []  # once


def test_an_auto_evaluation_that_cannot_be_made_is_recorded_failed_once(service, sessions, files):
    job = add_job(sessions, files)
    files.delete("proj", job.validation_file)
    created = service.create_auto_evaluations()
    assert len(created) == 1 and created[0].status == "failed" and created[0].error["code"] == "file_not_found"
    assert service.create_auto_evaluations() == []


def test_internal_tokens_map_to_one_project_until_revoked():
    tokens = InternalTokens()
    token = tokens.issue("alpha")
    assert token.startswith("ts-internal-") and len(token) > 40
    assert tokens.project_of(token) == "alpha"
    assert tokens.project_of(token + "x") is None and tokens.project_of("ts-anything") is None
    tokens.revoke(token)
    assert tokens.project_of(token) is None


@pytest.mark.parametrize(
    "host, url",
    [
        ("127.0.0.1", "http://127.0.0.1:8015/v1"),
        ("0.0.0.0", "http://127.0.0.1:8015/v1"),
        ("::", "http://[::1]:8015/v1"),
        ("10.1.2.3", "http://10.1.2.3:8015/v1"),
        ("localhost", "http://localhost:8015/v1"),
    ],
)
def test_the_worker_reaches_its_own_server(host, url):
    assert self_base_url(host, 8015) == url


def test_an_evaluation_is_held_under_a_lease_on_the_database_clock(service, dataset, monkeypatch):
    """The same leases as jobs: a claim and its heartbeats use the database's clock (a host whose clock
    is an hour behind is not taken for gone), a silent hold expires, and a worker that lost its hold
    cannot write progress or a result over the new holder's run."""
    import time

    evaluation = service.create("proj", {"models": [TINY], "dataset_file": dataset.id})
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() - 3600)
    assert service.claim_next("behind").id == evaluation.id
    assert service.heartbeat("behind") == {evaluation.id}
    monkeypatch.setattr(time, "time", real_time)
    assert service.requeue_interrupted("another-server", stale_after_s=30) == 0
    assert service.is_held(evaluation.id, "behind") and not service.is_held(evaluation.id, "another-server")
    time.sleep(1.2)
    assert service.heartbeat("behind") == {evaluation.id}  # a beat keeps it...
    assert service.requeue_interrupted("another-server", stale_after_s=1.0) == 0
    time.sleep(1.2)
    assert service.requeue_interrupted("another-server", stale_after_s=1.0) == 1  # ...silence loses it
    assert service.claim_next("another-server").id == evaluation.id
    assert not service.is_held(evaluation.id, "behind") and service.heartbeat("behind") == set()
    service.set_progress(evaluation.id, "behind", 2, 2)
    assert not service.finish(evaluation.id, "behind", summary={})
    row = service.get("proj", evaluation.id)
    assert (row.status, row.progress_done, row.worker_id) == ("running", 0, "another-server")
