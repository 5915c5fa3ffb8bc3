"""Job fixtures: a JobService over real stores (SQLite tmp file and the real PostgreSQL, a schema per
test), a tmp jobs dir, and the tiny test model found through the model cache (no torch work).

PostgreSQL: as in tests/unit/store/conftest.py; unreachable -> FAIL unless TUNESERVE_SKIP_POSTGRES=1.
"""

from __future__ import annotations

import json
import os
import uuid

import pytest
from sqlalchemy import text

from tuneserve.jobs.catalog import ModelCatalog
from tuneserve.jobs.service import JobService
from tuneserve.store.blobs import BlobStore
from tuneserve.store.db import make_engine, make_sessionmaker, migrate
from tuneserve.store.files import FileService

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(autouse=True)
def _model_env(monkeypatch):
    """The tiny model resolves from the prebuilt cache; no hub lookups."""
    monkeypatch.setenv("TUNESERVE_MODEL_CACHE", os.environ.get("TUNESERVE_MODEL_CACHE") or "/tmp/tscache")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request, tmp_path):
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'tuneserve.db'}")
        migrate(engine)
        yield engine
        engine.dispose()
        return
    if os.environ.get("TUNESERVE_SKIP_POSTGRES") == "1":
        pytest.skip("TUNESERVE_SKIP_POSTGRES=1")
    schema = f"ts_{uuid.uuid4().hex}"
    admin = make_engine(f"{PG_URL}?connect_timeout=5")
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:  # unreachable: fail loudly, never skip silently
        admin.dispose()
        pytest.fail(f"PostgreSQL at {PG_URL} is unreachable ({exc.__class__.__name__}: {exc}); "
                    "set TUNESERVE_SKIP_POSTGRES=1 to skip these tests", pytrace=False)
    engine = make_engine(f"{PG_URL}?options=-csearch_path%3D{schema}")
    try:
        migrate(engine)
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def sessions(engine):
    return make_sessionmaker(engine)


@pytest.fixture
def files(sessions, tmp_path):
    return FileService(sessions, BlobStore(tmp_path / "data" / "files"), max_upload_bytes=1_000_000)


@pytest.fixture
def jobs_dir(tmp_path):
    return tmp_path / "data" / "jobs"


@pytest.fixture
def jobs(sessions, files, jobs_dir):
    return JobService(sessions, files, ModelCatalog(sessions, jobs_dir), jobs_dir)


def chat_jsonl(n: int) -> bytes:
    return "".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}) + "\n"
                   for i in range(n)).encode()


@pytest.fixture
def training_file(files):
    """A valid 91-example chat training file in project `proj`."""
    return files.create_bytes("proj", "train.jsonl", "fine-tune", chat_jsonl(91))
