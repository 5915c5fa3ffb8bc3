"""One Settings object: CLI flags over the environment (TUNESERVE_*) over defaults, checked at start.

The data dir (and a SQLite database URL) is made absolute here, once: the training processes
run in their job directory, Ray jobs on other hosts, so nothing below may see a relative path.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TUNESERVE_", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(8015, ge=1, le=65535)
    data_dir: Path = Path("./tuneserve-data")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default SQLite in the data dir.")
    max_concurrent_jobs: int = Field(1, ge=1)
    max_upload_bytes: int = Field(512 * 1024 * 1024, ge=1)
    max_request_bytes: int = Field(
        16 * 1024 * 1024, ge=1, description="A request body's limit (JSON and any other); uploads have max_upload_bytes."
    )
    # NoDecode: the variable is comma-separated (as the flag is), not the JSON list pydantic-settings expects.
    cors_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="Origins whose browser pages may call the API (CORS); none by default: the console is same-origin."
    )
    insecure: bool = Field(False, description="Allow a non-loopback host with no API key.")
    poll_interval_s: float = Field(0.5, gt=0)
    run_scheduler: bool = Field(
        True, description="Run jobs in this server; False (serve --api-only): `tuneserve worker` runs them."
    )
    runner: Literal["local", "ray"] = Field(
        "local", description="local: processes on this machine; ray: Ray jobs on --ray-address."
    )
    ray_address: str | None = Field(None, description="The Ray cluster's Jobs API (its dashboard), e.g. http://ray-head:8265.")
    ray_python: str = Field(
        "python", min_length=1, description="The interpreter Ray jobs run with on the cluster's nodes (it must have tuneserve)."
    )
    procs_per_job: int | None = Field(
        None, ge=1, description="Local runner: processes per job (default: one per visible GPU, 1 without GPUs)."
    )
    heartbeat_interval_s: float | None = Field(
        None, gt=0, description="How often a worker says it still holds its jobs (default: a sixth of the timeout, at most 5 s)."
    )
    heartbeat_timeout_s: float = Field(30.0, gt=0, description="A job whose worker was silent this long is taken back.")
    inference_backend: Literal["local", "vllm", "llamacpp"] = Field(
        "local",
        description="local: this process generates; vllm: proxy to an upstream vLLM (--vllm-url); "
        "llamacpp: proxy to llama-cpp-python's server, run by tuneserve, with models and adapters as GGUF.",
    )
    llama_cpp_python: str | None = Field(
        None, description="llamacpp backend: the Python that has llama-cpp-python[server] (default: this one)."
    )
    vllm_url: str | None = Field(None, description="Root URL of the upstream vLLM server, e.g. http://vllm:8000.")
    vllm_max_lora_rank: int = Field(16, ge=1, description="The upstream's --max-lora-rank: jobs over it are refused.")
    vllm_api_key: SecretStr | None = Field(
        None, description="The upstream's --api-key; environment only (TUNESERVE_VLLM_API_KEY), never a flag."
    )
    # The local inference engine (inference_backend local).
    engine_max_batch_size: int = Field(16, ge=1, description="Requests decoded together in one batch.")
    engine_max_adapters: int = Field(8, ge=1, description="Fine-tuned adapters kept loaded at once (least recently used go).")
    engine_adapter_budget_mb: int = Field(512, ge=1, description="Memory the loaded adapters may take, in MiB.")
    engine_default_max_tokens: int = Field(
        512, ge=1, description="An answer's length in tokens when the request gives no max_tokens (at most the context left)."
    )

    @field_validator("data_dir", mode="after")
    @classmethod
    def _absolute_data_dir(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("database_url", mode="after")
    @classmethod
    def _absolute_sqlite_path(cls, value: str | None) -> str | None:
        """`sqlite:///rel.db` names a file relative to the working directory: make it absolute."""
        if value is None:
            return None
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(value)
        except ArgumentError as exc:
            raise ValueError(f"database_url {value!r} is not a SQLAlchemy URL (e.g. postgresql://user@host/db)") from exc
        if (
            url.get_backend_name() != "sqlite"
            or not url.database
            or url.database == ":memory:"
            or url.database.startswith("file:")
        ):
            return value
        return url.set(database=str(Path(url.database).expanduser().resolve())).render_as_string(hide_password=False)

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return tuple(part.strip() for part in value.split(",") if part.strip()) if isinstance(value, str) else value

    @field_validator("cors_origins", mode="after")
    @classmethod
    def _origins_are_origins(cls, origins: tuple[str, ...]) -> tuple[str, ...]:
        """A browser sends `Origin: scheme://host[:port]`, nothing more: a path (or a typo) would never match, silently."""
        checked = []
        for origin in origins:
            origin = origin.rstrip("/")
            parts = urlsplit(origin)
            if origin != "*" and (parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query):
                raise ValueError(f"{origin!r} is not an origin: give scheme://host[:port], e.g. https://app.example.com, or *")
            checked.append(origin)
        return tuple(checked)

    @model_validator(mode="after")
    def _backend_needs_url(self) -> "Settings":
        if self.inference_backend == "vllm" and not self.vllm_url:
            raise ValueError("inference_backend 'vllm' needs vllm_url (--vllm-url http://HOST:8000)")
        return self

    @model_validator(mode="after")
    def _ray_needs_address(self) -> "Settings":
        if self.runner == "ray" and not self.ray_address:
            raise ValueError("runner 'ray' needs ray_address (--ray-address http://RAY_HEAD:8265)")
        if self.heartbeat_timeout_s <= 2 * self.heartbeat_every_s:
            raise ValueError("heartbeat_timeout_s must be more than twice heartbeat_interval_s")
        return self

    @classmethod
    def environment_names(cls) -> set[str]:
        """The variables that configure a server: TUNESERVE_PORT, TUNESERVE_DATA_DIR, ..."""
        return {f"{cls.model_config['env_prefix']}{name.upper()}" for name in cls.model_fields}

    @property
    def heartbeat_every_s(self) -> float:
        return self.heartbeat_interval_s or min(5.0, self.heartbeat_timeout_s / 6)

    def engine_options(self) -> dict[str, int]:
        """The inference Engine's keyword arguments."""
        return {
            "max_batch_size": self.engine_max_batch_size,
            "max_adapters": self.engine_max_adapters,
            "adapter_budget_bytes": self.engine_adapter_budget_mb * 2**20,
            "default_max_tokens": self.engine_default_max_tokens,
        }

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'tuneserve.db'}"

    @property
    def host_is_loopback(self) -> bool:
        if self.host in ("localhost",):
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False
