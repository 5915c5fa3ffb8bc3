"""Environment faults below the API: no home directory for the model cache, and a full disk (a real
small tmpfs, filled up) under the blob store, atomic writes, exports and a training checkpoint."""

from __future__ import annotations

import gc
import io
import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY
from tuneserve.atomic import write_dir_atomically, write_text_atomically
from tuneserve.errors import InsufficientStorage
from tuneserve.models import resolve
from tuneserve.store.blobs import BlobStore

# ---- no home directory ---------------------------------------------------------------------------


@pytest.fixture
def no_cache_settings(monkeypatch):
    for name in ("TUNESERVE_MODEL_CACHE", "XDG_CACHE_HOME", "HOME"):
        monkeypatch.delenv(name, raising=False)
    resolve._warn_no_home.cache_clear()
    yield monkeypatch
    resolve._warn_no_home.cache_clear()


def test_the_model_cache_falls_back_to_a_per_user_temporary_dir_without_a_home(no_cache_settings, tmp_path, caplog):
    """As with HOME unset and a uid with no passwd entry: Path.home() raises; cache_dir() must not."""

    def no_home():
        raise RuntimeError("Could not determine home directory.")

    no_cache_settings.setattr(Path, "home", staticmethod(no_home))
    no_cache_settings.setattr(tempfile, "tempdir", str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="tuneserve.models"):
        first, second = resolve.cache_dir(), resolve.cache_dir()
    assert first == second == tmp_path / f"tuneserve-{os.getuid()}" / "models"
    warnings = [r.getMessage() for r in caplog.records if r.name == "tuneserve.models"]
    assert len(warnings) == 1 and "TUNESERVE_MODEL_CACHE" in warnings[0]


def test_the_model_cache_setting_then_xdg_then_home(no_cache_settings, tmp_path):
    no_cache_settings.setenv("HOME", str(tmp_path / "home"))
    assert resolve.cache_dir() == tmp_path / "home" / ".cache" / "tuneserve" / "models"
    no_cache_settings.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve.cache_dir() == tmp_path / "xdg" / "tuneserve" / "models"
    no_cache_settings.setenv("TUNESERVE_MODEL_CACHE", str(tmp_path / "models"))
    assert resolve.cache_dir() == tmp_path / "models"


# ---- a full disk -----------------------------------------------------------------------------------


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


def fill(disk: Path, leave: int) -> Path:
    """A filler file that leaves about `leave` bytes free on `disk`; delete it to free the space."""
    filler = disk / "filler.bin"
    with filler.open("wb") as out:
        out.write(b"\0" * max(free_bytes(disk) - leave, 0))
    return filler


@pytest.fixture
def small_disk(tmp_path):
    """small_disk(size) -> a fresh tmpfs of that size (e.g. "2m"), unmounted afterwards."""
    mounts: list[Path] = []

    def mount(size: str) -> Path:
        where = tmp_path / f"disk-{len(mounts)}"
        where.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs to fill up (needs root): {done.stderr.decode().strip()}")
        mounts.append(where)
        return where

    yield mount
    gc.collect()  # a writer that failed mid-file (torch.save's) may hold its file open until collected
    for where in mounts:
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "--lazy", str(where)], check=False)


def test_a_blob_larger_than_the_free_space_leaves_nothing_and_fits_once_space_is_freed(small_disk):
    disk = small_disk("2m")
    blobs = BlobStore(disk / "files")
    filler = fill(disk, leave=256 * 1024)
    data = os.urandom(512 * 1024)
    with pytest.raises(InsufficientStorage) as caught:
        blobs.write("file-a", io.BytesIO(data))
    assert caught.value.status == 507 and caught.value.code == "insufficient_storage"
    assert "no space left on device" in caught.value.message
    assert list((disk / "files").iterdir()) == [disk / "files" / ".partial"]
    assert list((disk / "files" / ".partial").iterdir()) == []

    filler.unlink()
    assert blobs.write("file-a", io.BytesIO(data)) == len(data)
    assert blobs.path("file-a").read_bytes() == data


def test_an_atomic_directory_write_on_a_full_disk_leaves_no_half_directory(small_disk):
    """torch.save on a full disk says only "unexpected pos": the full file system is what tells."""
    disk = small_disk("1m")
    fill(disk, leave=64 * 1024)

    def write(tmp: Path) -> None:
        tmp.mkdir()
        torch.save({"w": torch.zeros(256 * 1024)}, tmp / "state.pt")

    with pytest.raises(InsufficientStorage, match="no space left on device") as caught:
        write_dir_atomically(disk / "out", write)
    assert isinstance(caught.value, OSError)  # callers that handle OSError still do
    assert sorted(p.name for p in disk.iterdir()) == ["filler.bin"]
    with pytest.raises(InsufficientStorage):
        write_text_atomically(disk / "report.json", "x" * 256 * 1024)
    assert sorted(p.name for p in disk.iterdir()) == ["filler.bin"]


def test_other_write_errors_are_not_called_a_full_disk(small_disk):
    disk = small_disk("1m")

    def write(tmp: Path) -> None:
        tmp.mkdir()
        raise ValueError("not a disk problem")

    with pytest.raises(ValueError, match="not a disk problem"):
        write_dir_atomically(disk / "out", write)
    assert list(disk.iterdir()) == []


# ---- exports ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory, tiny_model_ready) -> Path:
    """A LoRA adapter on the tiny model (with its tokenizer), as training saves it."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(tiny_model_ready, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM"))
    model.peft_config["default"].base_model_name_or_path = TINY
    out = tmp_path_factory.mktemp("adapter") / "final"
    model.save_pretrained(out, save_embedding_layers=False)
    AutoTokenizer.from_pretrained(tiny_model_ready).save_pretrained(out)
    return out


def test_an_export_to_a_full_disk_raises_insufficient_storage_and_leaves_nothing(adapter_dir, small_disk):
    from tuneserve.export import export_adapter, export_merged, merged_tarball

    disk = small_disk("2m")
    fill(disk, leave=128 * 1024)  # the adapter tarball (tokenizer included) is over 1 MB, the merged model 16 MB
    with pytest.raises(InsufficientStorage, match="no space left on device"):
        export_adapter(adapter_dir, disk / "adapter.tar.gz")
    with pytest.raises(InsufficientStorage, match="no space left on device"):
        export_merged(adapter_dir, TINY, disk / "merged")
    with pytest.raises(InsufficientStorage, match="no space left on device"):
        merged_tarball(adapter_dir, TINY, disk / "merged.tar.gz")
    # Only the filler and merged_tarball's lock file (kept on success as well) remain.
    assert sorted(p.name for p in disk.iterdir()) == ["filler.bin", "merged.tar.gz.lock"]


def test_the_export_command_on_a_full_disk_exits_1_with_a_message(adapter_dir, small_disk, capsys):
    from tuneserve.export import main

    disk = small_disk("2m")
    fill(disk, leave=128 * 1024)
    assert main([str(adapter_dir), "--type", "merged", "-o", str(disk / "merged")]) == 1
    err = capsys.readouterr().err  # loading progress bars, then the message
    assert err.splitlines()[-1].startswith("error: no space left on device") and "Traceback" not in err
    assert not (disk / "merged").exists()


# ---- a training checkpoint -------------------------------------------------------------------------


@pytest.mark.training
def test_a_checkpoint_on_a_full_disk_fails_the_job_with_a_disk_full_message(small_disk, tmp_path, tiny_model_ready):
    """The process boundary (python -m tuneserve.training) reports the error event the server shows."""
    from tests.unit.training.conftest import make_spec, tiny_conversations, write_jsonl
    from tuneserve.training.__main__ import main
    from tuneserve.training.loop import latest_checkpoint

    train_file = write_jsonl(tmp_path / "train.jsonl", tiny_conversations())
    job_dir = small_disk("8m")
    make_spec(train_file, max_seq_length=64, hyperparameters={"n_epochs": 1}).write(job_dir)
    fill(job_dir, leave=1024 * 1024)  # room for the event log; a checkpoint (tokenizer included) is over 3 MB
    old_handler = signal.getsignal(signal.SIGTERM)
    try:
        assert main([str(job_dir)]) == 1
    finally:
        signal.signal(signal.SIGTERM, old_handler)
    events = [json.loads(line) for line in (job_dir / "events.jsonl").read_text().splitlines()]
    errors = [e["message"] for e in events if e.get("level") == "error"]
    assert len(errors) == 1 and "no space left on device" in errors[0] and "checkpoints/step-4" in errors[0], errors
    assert not any(e["type"] == "checkpoint" for e in events)
    assert latest_checkpoint(job_dir) is None
    assert list((job_dir / "checkpoints").iterdir()) == []  # no half-written (temporary) checkpoint left
