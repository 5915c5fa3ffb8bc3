"""One Settings object: environment (TUNESERVE_*) and CLI flags, checked at start."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TUNESERVE_", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(8015, ge=1, le=65535)
    data_dir: Path = Path("./tuneserve-data")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default SQLite in the data dir.")
    max_concurrent_jobs: int = Field(1, ge=1)
    max_upload_bytes: int = Field(512 * 1024 * 1024, ge=1)
    insecure: bool = Field(False, description="Allow a non-loopback host with no API key.")
    poll_interval_s: float = Field(0.5, gt=0)
    run_scheduler: bool = True

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'tuneserve.db').resolve()}"

    @property
    def host_is_loopback(self) -> bool:
        if self.host in ("localhost",):
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False
