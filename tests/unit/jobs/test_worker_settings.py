"""Runner and worker settings: what is refused before anything starts, and the lease timing."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tests.conftest import free_port
from tuneserve.cli import main
from tuneserve.settings import Settings


def test_the_ray_runner_needs_an_address():
    with pytest.raises(ValidationError, match="--ray-address"):
        Settings(runner="ray")


def test_heartbeats_come_several_times_per_timeout():
    assert Settings().heartbeat_every_s == 5.0
    assert Settings(heartbeat_timeout_s=3).heartbeat_every_s == 0.5
    with pytest.raises(ValidationError, match="twice"):
        Settings(heartbeat_timeout_s=3, heartbeat_interval_s=2)


def test_worker_and_serve_say_when_the_ray_cluster_cannot_be_reached(tmp_path, capsys):
    address = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    assert main(["worker", "--data-dir", str(tmp_path), "--runner", "ray", "--ray-address", address]) == 2
    assert f"cannot reach the Ray cluster's Jobs API at {address}" in capsys.readouterr().err
    assert main(["serve", "--data-dir", str(tmp_path), "--runner", "ray", "--ray-address", address]) == 2
    assert f"cannot reach the Ray cluster's Jobs API at {address}" in capsys.readouterr().err


def test_serve_refuses_ray_without_an_address(tmp_path, capsys):
    assert main(["serve", "--data-dir", str(tmp_path), "--runner", "ray"]) == 2
    assert "--ray-address" in capsys.readouterr().err
