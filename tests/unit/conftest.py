"""Database fixtures shared by the unit tests: every database test runs against SQLite (a tmp file)
and the real PostgreSQL.

PostgreSQL: 127.0.0.1:5432, user postgres (trust), database `test`; each test gets its own schema
(ts_<uuid>), dropped at teardown. If the server is unreachable, the postgres params FAIL, unless
TUNESERVE_SKIP_POSTGRES=1.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text


from tuneserve.data import validate_file
from tuneserve.store.blobs import BlobStore
from tuneserve.store.db import make_engine, make_sessionmaker, migrate
from tuneserve.store.files import FileService

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def bare_engine(request, tmp_path):
    """An engine over an empty database (not migrated)."""
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'tuneserve.db'}")
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
        pytest.fail(
            f"PostgreSQL at {PG_URL} is unreachable ({exc.__class__.__name__}: {exc}); "
            "set TUNESERVE_SKIP_POSTGRES=1 to skip these tests",
            pytrace=False,
        )
    engine = make_engine(f"{PG_URL}?options=-csearch_path%3D{schema}")
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def migrated_engine(bare_engine):
    """The database engine at the newest schema (the inference engine's fixture is inference_engine)."""
    migrate(bare_engine)
    return bare_engine


@pytest.fixture
def sessions(migrated_engine):
    return make_sessionmaker(migrated_engine)


@pytest.fixture
def files_root(tmp_path):
    return tmp_path / "data" / "files"


@pytest.fixture
def blobs(files_root):
    return BlobStore(files_root)


@pytest.fixture
def files(sessions, blobs):
    return FileService(sessions, blobs, max_upload_bytes=1_000_000, check=validate_file)


@pytest.fixture
def write_jsonl(tmp_path):
    """write_jsonl(records, name=...) -> path: one JSON value per line."""

    def _write(records: list[Any], name: str = "data.jsonl") -> Path:
        path = tmp_path / name
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
        return path

    return _write


@pytest.fixture
def write_json(tmp_path):
    """write_json(value, name=...) -> path: one (pretty-printed) JSON document."""

    def _write(value: Any, name: str = "data.json") -> Path:
        path = tmp_path / name
        path.write_text(json.dumps(value, indent=2), encoding="utf-8")
        return path

    return _write


@pytest.fixture
def write_bytes(tmp_path):
    def _write(data: bytes, name: str = "raw.jsonl") -> Path:
        path = tmp_path / name
        path.write_bytes(data)
        return path

    return _write
