"""`tuneserve serve --database-url postgresql://...`: the whole job flow on the real PostgreSQL,
and the state survives a restart."""

import os
import uuid

import pytest
from sqlalchemy import text

from tests.conftest import TINY, chat_jsonl, start_server, wait_for_status
from tuneserve.store.db import make_engine

PG = "postgresql://postgres@127.0.0.1:5432/test"
pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_url():
    if os.environ.get("TUNESERVE_SKIP_POSTGRES") == "1":
        pytest.skip("TUNESERVE_SKIP_POSTGRES=1")
    schema = f"ts_{uuid.uuid4().hex}"
    admin = make_engine(PG)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    yield f"{PG}?options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


def test_job_flow_on_postgres_survives_restart(tmp_path, pg_url, tiny_model_ready):
    server = start_server(tmp_path / "data", "--database-url", pg_url)
    try:
        client = server.client()
        file = client.files.create(file=("t.jsonl", chat_jsonl(12)), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(model=TINY, training_file=file.id, hyperparameters={"n_epochs": 1})
        job = wait_for_status(client, job.id, {"succeeded", "failed"}, timeout_s=120)
        assert job.status == "succeeded", job.error
    finally:
        server.stop()
    assert not (tmp_path / "data" / "tuneserve.db").exists()  # nothing went to SQLite
    engine = make_engine(pg_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT status FROM jobs WHERE id = :id"), {"id": job.id}).scalar() == "succeeded"
        assert conn.execute(text("SELECT count(*) FROM job_events WHERE job_id = :id"), {"id": job.id}).scalar() > 5
    engine.dispose()

    server = start_server(tmp_path / "data", "--database-url", pg_url)
    try:
        client = server.client()
        assert client.fine_tuning.jobs.retrieve(job.id).fine_tuned_model == job.fine_tuned_model
        assert client.files.retrieve(file.id).filename == "t.jsonl"
    finally:
        server.stop()
