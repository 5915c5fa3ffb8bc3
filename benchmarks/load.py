"""Load: a mixed workload against a real `tuneserve serve`, and a 1 GB upload.

Part 1 (mix, always): starts `python -m tuneserve serve` on 127.0.0.1 with a fresh data dir, fine-tunes
one small job (16 chat lines, 1 epoch) on the model, warms up (one request of each kind), then sends
`--requests` requests (default 200) from `--concurrency` workers (default 32), in a fixed shuffled mix:

| kind | share | what |
|---|---|---|
| file_list, file_retrieve, job_list, job_retrieve, job_events | 1/10 each | API reads |
| chat_base, chat_adapter | 2/10 each | chat completion, max_tokens 16, on the base model and on the job's model |
| upload | 1/10 | 1-10 MB of random bytes, purpose "batch" (stored without data validation) |

Prints errors, p50 and p99 latency per kind, the reads' p99 over those sent while a chat was in
flight (the engine busy), and the server's RSS (VmRSS) at start, after warm-up and after the run.
Goals, printed as PASS/FAIL lines: 0 errors; reads under 100 ms p99 while the engine is busy; RSS
after the run within 10% of its level after warm-up. `--rounds N` runs the mix N times and reports
the last, with the RSS after each round (a plateau is allocator arenas of new threads; a leak climbs).

Part 2 (`--big-upload`): a second server with --max-upload-bytes raised takes one `--big-upload-mb`
(default 1024) upload, streamed from a generator (this process never holds it). Prints the server's
RSS growth (peak VmHWM, reset before the upload, minus VmRSS before) and the peak bytes in the
server's TMPDIR (where Starlette spools multipart files) and in its data dir's files/: the copies
the upload makes on disk. Goal: RSS growth under 100 MB.

    . .venv/bin/activate
    python benchmarks/load.py                          # the tiny random model: the server's own overhead
    python benchmarks/load.py --model HuggingFaceTB/SmolLM2-135M-Instruct   # a real model (cached, offline)
    python benchmarks/load.py --big-upload             # and the 1 GB upload
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import local_server  # this folder: the scripts run as `python benchmarks/NAME.py`

TINY = "tuneserve/tiny-random"
READS = ("file_list", "file_retrieve", "job_list", "job_retrieve", "job_events")
MIX = {**{kind: 1 for kind in READS}, "chat_base": 2, "chat_adapter": 2, "upload": 1}
MB = 1024 * 1024


# ---- the server ------------------------------------------------------------------------------


def start_server(work: Path, *flags: str) -> tuple[subprocess.Popen, str]:
    """`tuneserve serve` on loopback, its data dir and TMPDIR (multipart spools) under `work`."""
    spool = work / "tmp"
    spool.mkdir(parents=True, exist_ok=True)
    return local_server.start_server(work / "data", work / "server.log", *flags, env={"TMPDIR": str(spool)})


def memory_mb(pid: int, field: str = "VmRSS") -> float:
    """A /proc/PID/status memory line (VmRSS, VmHWM) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux: clear_refs 5), so VmHWM later is this part's peak."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def open_file_bytes(pid: int, under: Path) -> int:
    """Bytes of the files `pid` holds open under `under`, deleted ones included: Starlette's spool is an
    unlinked temporary file, which no directory listing shows."""
    total = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd).startswith(str(under) + "/"):
                total += fd.stat().st_size
        except OSError:
            pass  # closed while looking
    return total


def tree_bytes(root: Path) -> int:
    total = 0
    for path in root.rglob("*"):
        try:
            total += path.stat().st_size if path.is_file() else 0
        except OSError:
            pass  # removed while walking
    return total


# ---- set-up: one fine-tuned model ---------------------------------------------------------------


def chat_lines(n: int) -> bytes:
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"Question {i}: what is the capital of Zorbia?"},
                {"role": "assistant", "content": "The capital of Zorbia is Quillton."},
            ]
        }
        for i in range(n)
    ]
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def fine_tune(url: str, model: str, timeout_s: float) -> tuple[str, str, str]:
    """(training file id, job id, fine-tuned model) of one small job, waited for."""
    import httpx

    with httpx.Client(base_url=url, timeout=60) as http:
        file = http.post("/v1/files", files={"file": ("load.jsonl", chat_lines(16))}, data={"purpose": "fine-tune"})
        file.raise_for_status()
        body = {"model": model, "training_file": file.json()["id"], "suffix": "load"}
        body["hyperparameters"] = {"n_epochs": 1, "batch_size": 4}
        job = http.post("/v1/fine_tuning/jobs", json=body)
        job.raise_for_status()
        job_id, deadline = job.json()["id"], time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            job = http.get(f"/v1/fine_tuning/jobs/{job_id}").json()
            if job["status"] in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(0.5)
        if job["status"] != "succeeded":
            raise RuntimeError(f"the set-up job {job_id} ended {job['status']}: {job.get('error')}")
        return file.json()["id"], job_id, job["fine_tuned_model"]


# ---- the mix ------------------------------------------------------------------------------------


class Mix:
    """The requests of each kind, sent with one shared httpx.AsyncClient."""

    def __init__(self, http, model: str, ft_model: str, file_id: str, job_id: str, max_tokens: int, seed: int):
        self.http, self.model, self.ft_model, self.file_id, self.job_id = http, model, ft_model, file_id, job_id
        self.max_tokens = max_tokens
        self.random = random.Random(seed)
        self.payload = random.Random(seed).randbytes(10 * MB)  # uploads are slices of it: no generating in the timed part
        self.chats_in_flight = 0

    async def send(self, kind: str):
        http = self.http
        if kind == "file_list":
            return await http.get("/v1/files")
        if kind == "file_retrieve":
            return await http.get(f"/v1/files/{self.file_id}")
        if kind == "job_list":
            return await http.get("/v1/fine_tuning/jobs")
        if kind == "job_retrieve":
            return await http.get(f"/v1/fine_tuning/jobs/{self.job_id}")
        if kind == "job_events":
            return await http.get(f"/v1/fine_tuning/jobs/{self.job_id}/events")
        if kind == "upload":
            size = self.random.randint(1 * MB, 10 * MB)
            files = {"file": ("load.bin", self.payload[:size])}
            return await http.post("/v1/files", files=files, data={"purpose": "batch"})
        model = self.model if kind == "chat_base" else self.ft_model
        question = f"Question {self.random.randint(0, 999)}: tell me about the sea."
        body = {"model": model, "messages": [{"role": "user", "content": question}], "max_tokens": self.max_tokens}
        self.chats_in_flight += 1
        try:
            return await http.post("/v1/chat/completions", json=body)
        finally:
            self.chats_in_flight -= 1


async def run_mix(mix: Mix, kinds: list[str], concurrency: int, ramp_s: float) -> list[dict]:
    """Send `kinds` from `concurrency` workers, started evenly over `ramp_s` (32 requests landing in the same
    millisecond measure a burst's queue, not the server under load); one record per request."""
    todo = iter(kinds)
    records: list[dict] = []
    t0 = time.perf_counter()

    async def worker(index: int):
        await asyncio.sleep(ramp_s * index / concurrency)
        for kind in todo:  # one shared iterator: each request is sent once
            busy = mix.chats_in_flight > 0
            start = time.perf_counter()
            try:
                response = await mix.send(kind)
                ok, detail = response.status_code == 200, f"{response.status_code} {response.text[:200]}"
            except Exception as exc:  # a timeout or a dropped connection is an error, not a crash
                ok, detail = False, f"{type(exc).__name__}: {exc}"
            records.append(
                {"kind": kind, "at": start - t0, "s": time.perf_counter() - start, "ok": ok, "busy": busy, "detail": detail}
            )

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return records


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): p99 of 20 samples is the largest, never an interpolation."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, -(-len(ordered) * q // 100) - 1))] if ordered else float("nan")


async def mix_part(args, url: str, pid: int, setup: tuple[str, str, str]) -> dict:
    import httpx

    file_id, job_id, ft_model = setup
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=args.timeout, limits=limits) as http:
        mix = Mix(http, args.model, ft_model, file_id, job_id, args.max_tokens, args.seed)
        for kind in MIX:  # warm-up: loads the base model and the adapter, opens the database, spools once
            response = await mix.send(kind)
            if response.status_code != 200:
                raise RuntimeError(f"warm-up {kind}: {response.status_code} {response.text[:300]}")
        rss_warm = memory_mb(pid)
        kinds = [kind for kind, weight in MIX.items() for _ in range(weight)]
        kinds = (kinds * (args.requests // len(kinds) + 1))[: args.requests]
        random.Random(args.seed).shuffle(kinds)
        rounds = []  # (records, wall s, RSS after): the figures are the last round's; the RSS of each shows a leak's trend
        for _ in range(args.rounds):
            start = time.perf_counter()
            records = await run_mix(mix, kinds, args.concurrency, args.ramp_s)
            rounds.append((records, time.perf_counter() - start, memory_mb(pid)))
    records, wall, rss_after = rounds[-1]
    return {
        "records": records,
        "rss_warm": rss_warm,
        "rss_rounds": [r[2] for r in rounds],
        "rss_after": rss_after,
        "wall_s": wall,
    }


def summarize(records: list[dict]) -> dict:
    table = {}
    for kind in MIX:
        mine = [r for r in records if r["kind"] == kind]
        times = [r["s"] * 1000 for r in mine]
        table[kind] = {
            "n": len(mine),
            "errors": sum(not r["ok"] for r in mine),
            "p50_ms": statistics.median(times),
            "p99_ms": percentile(times, 99),
        }
    busy_reads = [r["s"] * 1000 for r in records if r["kind"] in READS and r["busy"]]
    return {"kinds": table, "busy_reads": len(busy_reads), "busy_reads_p99_ms": percentile(busy_reads, 99)}


# ---- the big upload --------------------------------------------------------------------------------


def multipart_stream(size: int, boundary: str, chunk: int = MB):
    """(length, generator) of a multipart body: purpose "batch", then a file of `size` bytes made chunk by chunk."""
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    block = bytes(range(256)) * (chunk // 256)

    def body():
        yield head
        sent = 0
        while sent < size:
            piece = block[: min(chunk, size - sent)]
            sent += len(piece)
            yield piece
        yield tail

    return len(head) + size + len(tail), body()


def big_upload_part(args, work: Path) -> dict:
    import httpx

    size = args.big_upload_mb * MB
    process, url = start_server(work, "--max-upload-bytes", str(size))
    try:
        pid, spool, files_dir = process.pid, work / "tmp", work / "data" / "files"
        httpx.get(f"{url}/v1/files", timeout=30).raise_for_status()  # warm: the routes and the database are open
        rss_before = memory_mb(pid)
        peak_reset = reset_peak_rss(pid)
        peaks = {"rss": rss_before, "spool": 0, "files": 0}
        done = threading.Event()

        def sample():  # the spool and the blob on disk (and RSS, where VmHWM cannot be reset)
            while not done.wait(0.05):
                peaks["rss"] = max(peaks["rss"], memory_mb(pid))
                peaks["spool"] = max(peaks["spool"], open_file_bytes(pid, spool))
                peaks["files"] = max(peaks["files"], tree_bytes(files_dir))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        boundary = "tuneserve-load-" + os.urandom(8).hex()
        length, body = multipart_stream(size, boundary)
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}", "Content-Length": str(length)}
        start = time.perf_counter()
        response = httpx.post(f"{url}/v1/files", content=body, headers=headers, timeout=args.timeout * 10)
        seconds = time.perf_counter() - start
        done.set()
        sampler.join()
        peak = max(peaks["rss"], memory_mb(pid, "VmHWM") if peak_reset else 0)
        ok = response.status_code == 200 and response.json().get("bytes") == size
        return {
            "ok": ok,
            "status": response.status_code,
            "mb": args.big_upload_mb,
            "seconds": seconds,
            "rss_before_mb": rss_before,
            "rss_peak_mb": peak,
            "rss_growth_mb": peak - rss_before,
            "spool_peak_mb": peaks["spool"] / MB,
            "files_peak_mb": peaks["files"] / MB,
        }
    finally:
        local_server.stop_server(process)


# ---- main -------------------------------------------------------------------------------------------


def print_mix(result: dict, summary: dict) -> None:
    print(f"{'kind':<14}{'n':>5}{'errors':>8}{'p50 ms':>10}{'p99 ms':>10}")
    for kind, row in summary["kinds"].items():
        print(f"{kind:<14}{row['n']:>5}{row['errors']:>8}{row['p50_ms']:>10.1f}{row['p99_ms']:>10.1f}")
    print(f"wall {result['wall_s']:.1f}s; reads sent while a chat was in flight: {summary['busy_reads']}")
    print(
        f"RSS: start {result['rss_start']:.0f} MB, after warm-up {result['rss_warm']:.0f} MB, "
        f"after the run {result['rss_after']:.0f} MB (each round: {', '.join(f'{mb:.0f}' for mb in result['rss_rounds'])})"
    )
    for r in result["records"]:
        if not r["ok"]:
            print(f"  error: {r['kind']}: {r['detail']}")


def goals(result: dict, summary: dict) -> list[tuple[str, bool]]:
    errors = sum(row["errors"] for row in summary["kinds"].values())
    growth = result["rss_after"] / result["rss_warm"] - 1
    return [
        (f"errors: {errors} (goal 0)", errors == 0),
        (
            f"reads p99 while the engine is busy: {summary['busy_reads_p99_ms']:.1f} ms (goal < 100)",
            summary["busy_reads_p99_ms"] < 100,
        ),
        (f"RSS after the run vs after warm-up: {growth:+.1%} (goal within 10%)", abs(growth) <= 0.10),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=TINY, help=f"base model (default {TINY}; e.g. HuggingFaceTB/SmolLM2-135M-Instruct)")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--ramp-s", type=float, default=1.0, help="start the workers evenly over this many seconds (0: a burst)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=1, help="run the mix this many times; the last round is reported")
    parser.add_argument("--timeout", type=float, default=120, help="seconds per request")
    parser.add_argument("--fine-tune-timeout", type=float, default=900)
    parser.add_argument("--big-upload", action="store_true", help="also upload one --big-upload-mb file to a second server")
    parser.add_argument("--big-upload-mb", type=int, default=1024)
    parser.add_argument("--skip-mix", action="store_true", help="only the big upload")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    out: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "loadavg_start": os.getloadavg()[0]}
    checks: list[tuple[str, bool]] = []
    with tempfile.TemporaryDirectory(prefix="tuneserve-load-") as tmp:
        if not args.skip_mix:
            process, url = start_server(Path(tmp) / "mix")
            try:
                rss_start = memory_mb(process.pid)
                print(f"fine-tuning one job on {args.model} ...", flush=True)
                setup = fine_tune(url, args.model, args.fine_tune_timeout)
                print(f"{args.requests} requests at {args.concurrency} concurrent ...", flush=True)
                result = asyncio.run(mix_part(args, url, process.pid, setup))
            finally:
                local_server.stop_server(process)
            result["rss_start"] = rss_start
            summary = summarize(result["records"])
            print_mix(result, summary)
            checks += goals(result, summary)
            out["mix"] = {**{k: v for k, v in result.items() if k != "records"}, **summary}
        if args.big_upload:
            print(f"one {args.big_upload_mb} MB upload ...", flush=True)
            big = big_upload_part(args, Path(tmp) / "big")
            print(
                f"big upload: {big['status']}, {big['mb']} MB in {big['seconds']:.1f}s; server RSS {big['rss_before_mb']:.0f} MB "
                f"-> peak {big['rss_peak_mb']:.0f} MB (+{big['rss_growth_mb']:.0f} MB); on disk at peak: "
                f"spool {big['spool_peak_mb']:.0f} MB, files/ {big['files_peak_mb']:.0f} MB",
                flush=True,
            )
            checks += [
                (f"big upload stored whole: {big['ok']}", big["ok"]),
                (f"big upload RSS growth: {big['rss_growth_mb']:.0f} MB (goal < 100)", big["rss_growth_mb"] < 100),
            ]
            out["big_upload"] = big
    if args.json and "mix" in out:
        out["records"] = result["records"]
    out["loadavg_end"] = os.getloadavg()[0]
    print(f"load average: {out['loadavg_start']:.2f} at start, {out['loadavg_end']:.2f} at end")
    for line, passed in checks:
        print(f"{'PASS' if passed else 'FAIL'}: {line}")
    if args.json:
        args.json.write_text(json.dumps({**out, "goals": checks}, indent=2))
    return 0 if all(passed for _, passed in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
