"""The answers on the wire, byte for byte: the response models read the services' results by attribute
and keep the keys, their order, their nulls and their number formatting (json.dumps's) that the API
has always sent. The services are stand-ins here (the routes get them through api/deps.py)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from tuneserve.api import deps
from tuneserve.app import build_app
from tuneserve.settings import Settings

JOB = SimpleNamespace(
    id="ftjob-1",
    created_at=100,
    error=None,
    fine_tuned_model=None,
    finished_at=None,
    hyperparameters={"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 2.0},
    model="base/a",
    project="proj",
    result_files=None,
    seed=7,
    status="running",
    trained_tokens=None,
    training_file="file-1",
    validation_file=None,
    estimated_finish=500,
    user_metadata={"team": "core"},
    method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}},
    suffix=None,
    kept_checkpoint={"step": 4, "epoch": 1, "valid_loss": 0.5, "path": "checkpoints/step-4", "reason": "Kept ..."},
    spec={"model": "base/a", "wandb": {"project": "p"}},
)
EVENT = SimpleNamespace(
    id="ftevent-1", created_at=101, level="info", message="step 1 ü", type="metrics", data={"learning_rate": 1e-05, "loss": 1e16}
)
CHECKPOINT = SimpleNamespace(
    id="ftckpt-1", created_at=102, fine_tuned_model_checkpoint="ft:x:ckpt-step-1", job_id="ftjob-1", step_number=1, metrics={}
)


class FakeJobs:
    def get(self, project, job_id):
        return JOB

    def events(self, project, job_id, *, after=None, limit=20):
        return [EVENT], True

    def checkpoints(self, project, job_id, *, after=None, limit=10):
        return [CHECKPOINT], False


class FakeCatalog:
    def base_models(self):
        return ["base/a"]

    def fine_tuned(self, project):
        return [
            SimpleNamespace(
                fine_tuned_model="ft:base/a:proj::1",
                finished_at=None,
                created_at=5,
                spec={"model": "base/a"},
                model="base/a",
                id="ftjob-1",
            )
        ]

    def runtime_adapters(self, project):
        return [{"name": "lora1", "created": 7, "base": "base/a", "path": "/x"}]


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    app = build_app(Settings(data_dir=tmp_path_factory.mktemp("responses")))
    app.dependency_overrides[deps.current_project] = lambda: "proj"
    app.dependency_overrides[deps.job_service] = FakeJobs
    app.dependency_overrides[deps.model_catalog] = FakeCatalog
    return TestClient(app)


def wire(value) -> str:
    """What the API has always sent for `value`: starlette's JSONResponse rendering of the plain dict."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def test_a_job_is_sent_with_every_key_in_order_and_its_computed_fields(client):
    expected = {
        "id": "ftjob-1",
        "object": "fine_tuning.job",
        "created_at": 100,
        "error": None,
        "fine_tuned_model": None,
        "finished_at": None,
        "hyperparameters": {"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 2.0},
        "model": "base/a",
        "organization_id": "proj",
        "result_files": [],
        "seed": 7,
        "status": "running",
        "trained_tokens": None,
        "training_file": "file-1",
        "validation_file": None,
        "estimated_finish": 500,  # only while running
        "integrations": [{"type": "wandb", "wandb": {"project": "p"}}],
        "metadata": {"team": "core"},
        "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}},
        "suffix": None,
        "training_type": "lora",
        "kept_checkpoint": {"step": 4, "epoch": 1, "valid_loss": 0.5, "reason": "Kept ..."},  # the server's path left out
    }
    assert client.get("/v1/fine_tuning/jobs/ftjob-1").text == wire(expected)
    assert client.post("/v1/fine_tuning/jobs/retrieve", json={"fine_tuning_job_id": "ftjob-1"}).text == wire(expected)


def test_events_keep_json_dumps_number_formatting_and_lists_their_page_keys(client):
    events = client.get("/v1/fine_tuning/jobs/ftjob-1/events").text
    event = {
        "id": "ftevent-1",
        "object": "fine_tuning.job.event",
        "created_at": 101,
        "level": "info",
        "message": "step 1 ü",
        "type": "metrics",
        "data": {"learning_rate": 1e-05, "loss": 1e16},
    }
    assert events == wire({"object": "list", "data": [event], "has_more": True})
    assert '"learning_rate":1e-05' in events and '"loss":1e+16' in events  # not pydantic's 1e-5 / 1e16


def test_checkpoint_pages_name_their_first_and_last_ids_and_opea_gets_a_bare_array(client):
    checkpoint = {
        "id": "ftckpt-1",
        "object": "fine_tuning.job.checkpoint",
        "created_at": 102,
        "fine_tuned_model_checkpoint": "ft:x:ckpt-step-1",
        "fine_tuning_job_id": "ftjob-1",
        "step_number": 1,
        "metrics": {},
    }
    page = {"object": "list", "data": [checkpoint], "has_more": False, "first_id": "ftckpt-1", "last_id": "ftckpt-1"}
    assert client.get("/v1/fine_tuning/jobs/ftjob-1/checkpoints").text == wire(page)
    assert client.post("/v1/finetune/list_checkpoints", json={"fine_tuning_job_id": "ftjob-1"}).text == wire([checkpoint])


def test_model_cards_name_their_job_only_when_a_job_made_them(client):
    base = {"id": "base/a", "object": "model", "created": 0, "owned_by": "tuneserve", "root": "base/a", "parent": None}
    tuned = {
        "id": "ft:base/a:proj::1",
        "object": "model",
        "created": 5,
        "owned_by": "proj",
        "root": "base/a",
        "parent": "base/a",
        "fine_tuning_job_id": "ftjob-1",
    }
    loaded = {"id": "lora1", "object": "model", "created": 7, "owned_by": "proj", "root": "base/a", "parent": "base/a"}
    assert client.get("/v1/models").text == wire({"object": "list", "data": [base, tuned, loaded]})
    assert client.get("/v1/models/ft:base/a:proj::1").text == wire(tuned)
    assert client.get("/v1/models/lora1").text == wire(loaded)
    missing = client.get("/v1/models/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
