"""Both runners, and the recording runner the scheduler tests use, are what the scheduler asks for:
every member of the `Runner` Protocol, with the same parameters, and handles that are `RunHandle`s.
(Ray itself is not needed: RayRunner imports it only when it is built.)"""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from tuneserve.jobs.runners import Runner, RunHandle
from tuneserve.jobs.runners.local import LocalHandle, LocalRunner
from tuneserve.jobs.runners.ray import RayHandle, RayRunner
from tests.unit.jobs.test_scheduler_workers import Handle, RecordingRunner

METHODS = ["start", "poll", "stop", "failure_detail", "adopt", "abandon", "describe"]


def parameters(function) -> list[tuple[str, inspect._ParameterKind, object]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


@pytest.mark.parametrize("runner_class", [LocalRunner, RayRunner, RecordingRunner], ids=lambda c: c.__name__)
def test_each_runner_has_the_protocols_members_with_its_parameters(runner_class):
    runner = object.__new__(runner_class)  # no Ray cluster, no processes: only the shape is looked at
    if runner_class is RecordingRunner:
        runner = RecordingRunner()
    assert isinstance(runner, Runner)
    for name in METHODS:
        assert parameters(getattr(runner_class, name)) == parameters(getattr(Runner, name)), name
    assert isinstance(runner.detachable, bool) and isinstance(runner.starts_pending, bool) and runner.name


def test_a_class_missing_a_member_is_no_runner():
    class NoAdopt:
        detachable = starts_pending = False
        name = "partial"

        def start(self, job_id, job_dir, attempt=1): ...
        def poll(self, handle): ...
        def stop(self, handle, grace_s=5.0, *, pause=False): ...
        def failure_detail(self, handle): ...
        def abandon(self, job_id, job_dir, runner_pid, runner_ref, attempt=None): ...
        def describe(self, handle): ...

    assert not isinstance(NoAdopt(), Runner)


def test_the_handles_are_run_handles(tmp_path: Path):
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    local = LocalHandle("ftjob-1", tmp_path, process)
    ray = RayHandle("ftjob-1", tmp_path, "ftjob-1-attempt-1", "http://head:8265/#/jobs/ftjob-1-attempt-1")
    fake = Handle("ftjob-1", tmp_path, "ref")
    for handle in (local, ray, fake):
        assert isinstance(handle, RunHandle)
    assert (local.ref, local.pid, local.dashboard_url) == (str(process.pid), process.pid, None)
    assert (ray.ref, ray.pid, ray.dashboard_url) == ("ftjob-1-attempt-1", None, "http://head:8265/#/jobs/ftjob-1-attempt-1")
