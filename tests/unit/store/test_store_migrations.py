"""migrate(): creates the schema at the newest revision, and is safe to run again."""

from __future__ import annotations

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from alembic import command

from tuneserve.store.db import MIGRATIONS, make_sessionmaker, migrate
from tuneserve.store.keys import KeyService
from tuneserve.store.tables import Base

TABLES = {"api_keys", "files", "jobs", "job_events", "checkpoints", "evaluations"}


def _head() -> str:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(config).get_current_head()


def _version(engine) -> list[str]:
    with engine.connect() as conn:
        return [row[0] for row in conn.execute(text("SELECT version_num FROM alembic_version"))]


def test_migrate_creates_tables_at_head(bare_engine):
    assert not (set(inspect(bare_engine).get_table_names()) & TABLES)
    migrate(bare_engine)
    names = set(inspect(bare_engine).get_table_names())
    assert TABLES | {"alembic_version"} <= names
    assert _head() == "0006"
    assert _version(bare_engine) == ["0006"]


def test_migration_matches_the_orm_columns(bare_engine):
    migrate(bare_engine)
    inspector = inspect(bare_engine)
    for table in Base.metadata.sorted_tables:
        migrated = {c["name"] for c in inspector.get_columns(table.name)}
        assert migrated == {c.name for c in table.columns}, table.name


def test_migrate_is_idempotent_and_keeps_data(bare_engine):
    migrate(bare_engine)
    keys = KeyService(make_sessionmaker(bare_engine))
    key = keys.create("proj-a")
    migrate(bare_engine)
    migrate(bare_engine)
    assert _version(bare_engine) == ["0006"]
    assert TABLES <= set(inspect(bare_engine).get_table_names())
    assert keys.project_of(key) == "proj-a"


def test_a_0001_database_upgrades_and_keeps_its_files(bare_engine):
    """A data dir made by the first release upgrades in place at the next start."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with bare_engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0001")
        conn.execute(
            text(
                "INSERT INTO files (id, project, filename, purpose, bytes, created_at, status, deleted) "
                "VALUES ('file-old', 'p', 'old.jsonl', 'fine-tune', 3, 1, 'processed', false)"
            )
        )
    assert "report" not in {c["name"] for c in inspect(bare_engine).get_columns("files")}
    migrate(bare_engine)
    assert _version(bare_engine) == ["0006"]
    assert {"report", "kind"} <= {c["name"] for c in inspect(bare_engine).get_columns("files")}
    assert "kept_checkpoint" in {c["name"] for c in inspect(bare_engine).get_columns("jobs")}
    with bare_engine.connect() as conn:
        assert conn.execute(text("SELECT filename FROM files WHERE id = 'file-old'")).scalar() == "old.jsonl"
