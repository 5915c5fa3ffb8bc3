"""Database engine, sessions and schema migrations (Alembic, run at start)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from tuneserve.errors import ServiceUnavailable

MIGRATIONS = Path(__file__).parent / "migrations"


def make_engine(url: str) -> Engine:
    """SQLite gets WAL and a busy timeout (API threads, scheduler thread and CLI share it)."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(url, pool_pre_ping=True)


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def database_unavailable(exc: BaseException) -> ServiceUnavailable | None:
    """The 503 to answer when `exc` says the database cannot be reached (PostgreSQL stopped, restarting,
    or the connection cut under a query), else None: any other database error is a bug, not an outage.
    The pool's pre-ping reconnects by itself once the database is back, so a retry then succeeds."""
    if not isinstance(exc, DBAPIError):
        return None
    if not exc.connection_invalidated and not _is_connection_error(exc.orig):
        return None
    # The driver's text names the host and port; the log keeps it, the client gets no more than this.
    return ServiceUnavailable("The database is unavailable; try again shortly.", code="database_unavailable")


def _is_connection_error(orig: BaseException | None) -> bool:
    try:
        import psycopg
    except ImportError:  # no PostgreSQL driver: SQLite has no connection to lose
        return False
    # OperationalError is what psycopg raises for a refused, cut or not yet accepted connection
    # (AdminShutdown, CannotConnectNow are its subclasses); a bad query is a ProgrammingError.
    return isinstance(orig, psycopg.OperationalError)
