"""A 1 GiB upload streams to disk: the server's memory barely moves, and the bytes arrive whole and in order.

The body is made by a generator, chunk by chunk, so this process never holds it either. Purpose "batch"
skips data validation, so what is measured is the upload path alone: Starlette's multipart spool (an
unlinked temporary file under the server's TMPDIR), then the blob store's copy into the data dir.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import httpx
import pytest

from tests.conftest import start_server, wait_for

MIB = 1024 * 1024
SIZE = 1024 * MIB


def status_mib(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for {pid}")


def chunk(index: int) -> bytes:
    """1 MiB that says where it belongs: its index, then one of 4 patterns (so a swapped MiB shows too)."""
    return index.to_bytes(8, "big") + PATTERNS[index % 4]


PATTERNS = [bytes((shift * 61 + i) % 251 for i in range(MIB - 8)) for shift in range(4)]


def multipart_body(boundary: str, size: int):
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def body():
        yield head
        for index in range(size // MIB):
            yield chunk(index)
        yield tail

    return len(head) + size + len(tail), body()


def open_paths(pid: int) -> list[str]:
    paths = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            paths.append(os.readlink(fd))
        except OSError:
            pass  # closed while listing
    return paths


@pytest.fixture
def big_server(tmp_path, tiny_model_ready):
    spool = tmp_path / "spool"
    spool.mkdir()
    srv = start_server(tmp_path / "data", "--max-upload-bytes", str(SIZE), env={"TMPDIR": str(spool)})
    yield srv, spool
    srv.stop()


def test_a_1_gib_upload_streams_to_disk_with_under_100_mb_of_server_memory(big_server):
    server, spool = big_server
    pid = server.process.pid
    httpx.get(f"{server.base_url}/v1/files", timeout=30).raise_for_status()  # routes and database warm
    before = status_mib(pid, "VmRSS")
    # VmHWM reset to the current RSS (Linux's clear_refs 5): afterwards it is the upload's peak, however brief.
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    sampled, done = [before], threading.Event()

    def sample():  # a second witness, in case the kernel ignores the reset
        while not done.wait(0.05):
            sampled.append(status_mib(pid, "VmRSS"))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    boundary = "bigupload" + os.urandom(8).hex()
    length, body = multipart_body(boundary, SIZE)
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}", "Content-Length": str(length)}
    try:
        response = httpx.post(f"{server.base_url}/v1/files", content=body, headers=headers, timeout=300)
    finally:
        done.set()
        sampler.join()
    peak = max(status_mib(pid, "VmHWM"), *sampled)

    assert response.status_code == 200, response.text
    assert response.json()["bytes"] == SIZE
    assert peak - before < 100, f"server RSS grew {peak - before:.0f} MB during a 1 GiB upload ({before:.0f} -> {peak:.0f})"

    stored = server.data_dir / "files" / response.json()["id"]
    assert stored.stat().st_size == SIZE
    with stored.open("rb") as f:  # whole and in order: the first, a middle and the last MiB
        for index in (0, SIZE // MIB // 2 + 1, SIZE // MIB - 1):
            f.seek(index * MIB)
            assert f.read(MIB) == chunk(index), f"MiB {index} differs"
    # Nothing of the upload is left behind: no spool file held open or on disk, no partial blob.
    # Starlette closes the request's spooled file after the response is sent: give it a moment (a loaded machine
    # once saw it still open, already deleted, right after the response).
    wait_for(
        lambda: not [path for path in open_paths(pid) if path.startswith(str(spool))],
        10,
        "the spooled upload to be closed",
    )
    assert list(spool.iterdir()) == []
    assert list((server.data_dir / "files" / ".partial").iterdir()) == []
