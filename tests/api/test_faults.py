"""A real server under two environment faults: no home directory (a container run with an arbitrary
--user: HOME unset, the uid not in /etc/passwd) and a data dir on a full disk (a small tmpfs)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import httpx
import openai
import pytest

from tests.conftest import TINY, start_server


@pytest.fixture
def no_home(monkeypatch, tmp_path):
    """The server's environment without HOME, XDG_CACHE_HOME or TUNESERVE_MODEL_CACHE, and a Python in which
    the uid has no passwd entry. That last part is faked by a sitecustomize that makes pwd.getpwuid raise
    KeyError: this machine's uid (root) has an entry, and another uid cannot reach the interpreter.
    Returns the temporary directory the server is given (TMPDIR)."""
    fake = tmp_path / "no-passwd-entry"
    fake.mkdir()
    (fake / "sitecustomize.py").write_text(
        "import pwd\n\n\ndef _no_entry(uid):\n    raise KeyError(f'getpwuid(): uid not found: {uid}')\n\n\npwd.getpwuid = _no_entry\n"
    )
    for name in ("HOME", "XDG_CACHE_HOME", "TUNESERVE_MODEL_CACHE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(fake), os.environ.get("PYTHONPATH")) if p))
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))  # the fallback cache lands here, not in the machine's /tmp
    return tmp


def test_a_server_without_a_home_directory_serves_models_and_chat(no_home, tmp_path):
    probe = "import pathlib\ntry:\n    pathlib.Path.home()\nexcept RuntimeError:\n    print('no home')"
    check = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert check.stdout.strip() == "no home", "the fake did not take: Path.home() still works in the server"
    server = start_server(tmp_path / "data")
    try:
        client = server.client()
        assert TINY in [m.id for m in client.models.list().data]
        answer = client.chat.completions.create(model=TINY, messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
        assert answer.choices[0].message.content is not None
        fallback = no_home / f"tuneserve-{os.getuid()}" / "models"
        assert (fallback / TINY.replace("/", "--") / "config.json").is_file()  # built in the fallback cache
        assert "set TUNESERVE_MODEL_CACHE" in server.log.read_text()
    finally:
        server.stop()


@pytest.fixture
def full_disk_server(tmp_path):
    """A server whose data dir is a 4 MB tmpfs, unmounted afterwards."""
    data = tmp_path / "data"
    data.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(data)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill up (needs root): {done.stderr.decode().strip()}")
    server = None
    try:
        server = start_server(data)
        yield server
    finally:
        if server is not None:
            server.stop()
        if subprocess.run(["umount", str(data)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "--lazy", str(data)], check=False)


def test_an_upload_to_a_full_disk_is_a_507_keeps_nothing_and_succeeds_once_space_is_freed(full_disk_server):
    server, data = full_disk_server, full_disk_server.data_dir
    client = server.client()
    filler = data / "filler.bin"
    filler.write_bytes(b"\0" * (shutil.disk_usage(data).free - 512 * 1024))
    content = b'{"custom_id": "x"}\n' * (1024 * 1024 // 19)  # about 1 MB: more than is free

    with pytest.raises(openai.APIStatusError) as caught:
        client.files.create(file=("big.jsonl", content), purpose="batch")
    assert caught.value.status_code == 507
    error = caught.value.response.json()["error"]
    assert error["code"] == "insufficient_storage" and error["type"] == "server_error" and error["param"] is None
    assert "no space left on device" in error["message"]
    assert client.files.list().data == []
    blobs = data / "files"
    assert [p.name for p in blobs.iterdir()] == [".partial"] and list((blobs / ".partial").iterdir()) == []
    assert httpx.get(f"{server.base_url}/v1/health_check").status_code == 200

    filler.unlink()
    stored = client.files.create(file=("big.jsonl", content), purpose="batch")
    assert stored.bytes == len(content)
    assert [f.id for f in client.files.list().data] == [stored.id]
    assert client.files.content(stored.id).read() == content
