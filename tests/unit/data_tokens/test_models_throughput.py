"""The throughput store: round trip, running median of the last 5, atomic file, bad values."""

from __future__ import annotations

import json

import pytest

from tuneserve import atomic
from tuneserve.models import throughput


@pytest.fixture(autouse=True)
def store(tmp_path, monkeypatch):
    monkeypatch.setattr(throughput, "cache_dir", lambda: tmp_path)
    return tmp_path


def test_round_trip_per_model_and_device():
    assert throughput.measured_throughput("m", "cpu") is None
    assert throughput.record_throughput("m", "cpu", 120.0) == 120.0
    throughput.record_throughput("m", "cuda", 9000)
    assert throughput.measured_throughput("m", "cpu") == 120.0
    assert throughput.measured_throughput("m", "cuda") == 9000.0
    assert throughput.measured_throughput("other", "cpu") is None


def test_median_of_the_last_five():
    for value in [1000, 10, 20, 30, 40, 50]:  # the 1000 falls out of the window
        throughput.record_throughput("m", "cpu", value)
    assert throughput.measured_throughput("m", "cpu") == 30.0
    throughput.record_throughput("m", "cpu", 1e6)  # one outlier barely moves a median
    assert throughput.measured_throughput("m", "cpu") == 40.0
    data = json.loads(throughput.throughput_path().read_text())
    assert data["m"]["cpu"]["samples"] == [20, 30, 40, 50, 1e6]


def test_file_is_written_atomically(store, monkeypatch):
    throughput.record_throughput("m", "cpu", 50)
    before = throughput.throughput_path().read_text()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "fsync", crash)  # the disk fills up while the new file is written
    with pytest.raises(OSError):
        throughput.record_throughput("m", "cpu", 60)
    assert throughput.throughput_path().read_text() == before  # the old file is intact
    assert sorted(p.name for p in store.iterdir()) == ["throughput.json", "throughput.json.lock"]  # no temp left


def test_unreadable_store_counts_as_empty(store):
    throughput.throughput_path().write_text("{not json")
    assert throughput.measured_throughput("m", "cpu") is None
    throughput.record_throughput("m", "cpu", 7)
    assert throughput.measured_throughput("m", "cpu") == 7.0


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf")])
def test_rejects_non_positive_values(bad):
    with pytest.raises(ValueError):
        throughput.record_throughput("m", "cpu", bad)


def test_no_torch_import():
    import subprocess
    import sys

    code = "import sys, tuneserve.models.throughput; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
