"""Server settings as every command builds them: flags over TUNESERVE_* variables over defaults, and a
data dir (and SQLite URL) made absolute once, against the working directory of the command."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuneserve.cli import CommandError, build_parser, settings_from
from tuneserve.settings import Settings

ENVIRONMENT = {
    "TUNESERVE_HOST": "127.0.0.2",
    "TUNESERVE_PORT": "9100",
    "TUNESERVE_DATA_DIR": "env-data",
    "TUNESERVE_INSECURE": "1",
    "TUNESERVE_MAX_UPLOAD_BYTES": "1234",
    "TUNESERVE_MAX_CONCURRENT_JOBS": "3",
}


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in Settings.environment_names():
        monkeypatch.delenv(name, raising=False)
    return tmp_path.resolve()


def settings_for(*argv: str) -> Settings:
    return settings_from(build_parser().parse_args(list(argv)))


def test_defaults_when_neither_flag_nor_environment(in_tmp):
    settings = settings_for("serve")
    assert (settings.host, settings.port, settings.insecure) == ("127.0.0.1", 8015, False)
    assert (settings.max_upload_bytes, settings.max_concurrent_jobs) == (512 * 1024 * 1024, 1)
    assert settings.data_dir == in_tmp / "tuneserve-data"
    assert settings.db_url == f"sqlite:///{in_tmp / 'tuneserve-data' / 'tuneserve.db'}"


def test_the_environment_over_defaults(in_tmp, monkeypatch):
    for name, value in ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    settings = settings_for("serve")
    assert (settings.host, settings.port, settings.insecure) == ("127.0.0.2", 9100, True)
    assert (settings.max_upload_bytes, settings.max_concurrent_jobs) == (1234, 3)
    assert settings.data_dir == in_tmp / "env-data"


def test_flags_over_the_environment(in_tmp, monkeypatch):
    for name, value in ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    settings = settings_for(
        "serve",
        "--host",
        "127.0.0.3",
        "--port",
        "9200",
        "--data-dir",
        "flag-data",
        "--max-upload-bytes",
        "99",
        "--max-concurrent-jobs",
        "2",
    )
    assert (settings.host, settings.port) == ("127.0.0.3", 9200)
    assert (settings.max_upload_bytes, settings.max_concurrent_jobs) == (99, 2)
    assert settings.data_dir == in_tmp / "flag-data"
    assert settings.insecure  # no flag to turn it off: the environment's 1 stands


@pytest.mark.parametrize("command", [["worker"], ["keys", "create", "--project", "p"]])
def test_every_store_command_reads_the_same_settings(in_tmp, monkeypatch, command):
    monkeypatch.setenv("TUNESERVE_DATA_DIR", "env-data")
    monkeypatch.setenv("TUNESERVE_MAX_CONCURRENT_JOBS", "3")
    assert settings_for(*command).data_dir == in_tmp / "env-data"
    assert settings_for(*command, "--data-dir", "../up/./flag").data_dir == in_tmp.parent / "up" / "flag"
    if command == ["worker"]:
        assert settings_for(*command).max_concurrent_jobs == 3
        assert settings_for(*command, "--max-concurrent-jobs", "4").max_concurrent_jobs == 4


def test_data_dir_is_absolute_and_user_expanded(in_tmp, monkeypatch):
    monkeypatch.setenv("HOME", str(in_tmp / "home"))
    assert Settings(data_dir="~/ts").data_dir == in_tmp / "home" / "ts"
    assert Settings(data_dir="a/../b").data_dir == in_tmp / "b"


def test_a_relative_sqlite_url_is_made_absolute(in_tmp):
    assert Settings(database_url="sqlite:///db/ts.db").db_url == f"sqlite:///{in_tmp / 'db' / 'ts.db'}"
    assert Settings(database_url=f"sqlite:///{in_tmp}/x.db").db_url == f"sqlite:///{in_tmp}/x.db"
    assert Settings(database_url="sqlite://").db_url == "sqlite://"  # in memory stays in memory
    postgres = "postgresql://u:secret@db:5432/tuneserve"
    assert Settings(database_url=postgres).db_url == postgres


@pytest.mark.parametrize(
    ("name", "value", "shown"),
    [
        ("TUNESERVE_PORT", "eighty", "--port / TUNESERVE_PORT"),
        ("TUNESERVE_MAX_UPLOAD_BYTES", "0", "--max-upload-bytes / TUNESERVE_MAX_UPLOAD_BYTES"),
        ("TUNESERVE_DATABASE_URL", "not a url", "--database-url / TUNESERVE_DATABASE_URL"),
    ],
)
def test_a_bad_value_names_the_flag_and_the_variable(in_tmp, monkeypatch, name, value, shown):
    """(`main` prints a CommandError as one `error: ...` line and exits 2: tests/unit/jobs/test_worker_settings.py.)"""
    monkeypatch.setenv(name, value)
    with pytest.raises(CommandError, match=f"^{shown}: ") as error:
        settings_for("serve")
    assert len(str(error.value).splitlines()) == 1


def test_engine_knobs_from_flags_and_environment(in_tmp, monkeypatch):
    assert settings_for("serve").engine_options() == {
        "max_batch_size": 16,
        "max_adapters": 8,
        "adapter_budget_bytes": 512 * 2**20,
        "default_max_tokens": 512,
    }
    monkeypatch.setenv("TUNESERVE_ENGINE_MAX_BATCH_SIZE", "4")
    monkeypatch.setenv("TUNESERVE_ENGINE_ADAPTER_BUDGET_MB", "64")
    options = settings_for("serve", "--engine-max-adapters", "2", "--engine-default-max-tokens", "16").engine_options()
    assert options == {"max_batch_size": 4, "max_adapters": 2, "adapter_budget_bytes": 64 * 2**20, "default_max_tokens": 16}
    with pytest.raises(CommandError, match="--engine-max-batch-size / TUNESERVE_ENGINE_MAX_BATCH_SIZE"):
        settings_for("serve", "--engine-max-batch-size", "0")


def test_the_server_builds_its_engine_with_those_knobs(tmp_path):
    from fastapi.testclient import TestClient

    from tuneserve.app import build_app

    settings = Settings(
        data_dir=tmp_path, run_scheduler=False, engine_max_batch_size=3, engine_max_adapters=2, engine_default_max_tokens=7
    )
    app = build_app(settings)
    with TestClient(app):
        engine = app.state.engine.get()
        try:
            assert (engine._batcher.max_batch_size, engine._adapters.max_adapters) == (3, 2)
            assert engine._adapters.budget_bytes == 512 * 2**20 and engine._default_max_tokens == 7
        finally:
            engine.close()


def test_body_limit_and_cors_origins_from_flags_and_environment(in_tmp, monkeypatch):
    settings = settings_for("serve")
    assert (settings.max_request_bytes, settings.cors_origins) == (16 * 2**20, ())
    monkeypatch.setenv("TUNESERVE_MAX_REQUEST_BYTES", "1000")
    monkeypatch.setenv("TUNESERVE_CORS_ORIGINS", "https://a.example, http://b.example:8080/")
    settings = settings_for("serve")
    assert (settings.max_request_bytes, settings.cors_origins) == (1000, ("https://a.example", "http://b.example:8080"))
    settings = settings_for("serve", "--max-request-bytes", "2000", "--cors-origins", "*")
    assert (settings.max_request_bytes, settings.cors_origins) == (2000, ("*",))
    with pytest.raises(CommandError, match="^--cors-origins / TUNESERVE_CORS_ORIGINS: 'https://a.example/app' is not an origin"):
        settings_for("serve", "--cors-origins", "https://a.example/app")
    with pytest.raises(CommandError, match="^--max-request-bytes / TUNESERVE_MAX_REQUEST_BYTES: "):
        settings_for("serve", "--max-request-bytes", "0")
