"""migrate(): creates the schema at the newest revision, and is safe to run again."""

from __future__ import annotations

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from tuneserve.store.db import MIGRATIONS, make_sessionmaker, migrate
from tuneserve.store.keys import KeyService
from tuneserve.store.tables import Base

TABLES = {"api_keys", "files", "jobs", "job_events", "checkpoints"}


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
    assert _head() == "0001"
    assert _version(bare_engine) == ["0001"]


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
    assert _version(bare_engine) == ["0001"]
    assert TABLES <= set(inspect(bare_engine).get_table_names())
    assert keys.project_of(key) == "proj-a"
