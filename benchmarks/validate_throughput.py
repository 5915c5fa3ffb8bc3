"""Validation speed and memory: tuneserve's `validate_file` against Together's `check_file`.

Both run on the same generated chat JSONL file (alpaca_en_demo.json turned into OpenAI chat
lines, repeated with a counter so that no two lines are equal), each measurement in a fresh
subprocess that reports its own wall time and peak RSS (getrusage(RUSAGE_SELF).ru_maxrss, which
includes the interpreter and imports). Together 1.3.14 pins rich<14, so it runs from its own
virtual environment, benchmarks/.venv-together, created on first use.

Three sides:
  tuneserve            validate_file(path): structural checks, the like-for-like comparison
  tuneserve+tokens     validate_file(path, model=M): adds the token report (tokenization)
  together             together.utils.check_file(path) (v1.3.14)

    python benchmarks/validate_throughput.py                 # 200 MB, 3 runs each, medians
    python benchmarks/validate_throughput.py --size-mb 1000  # the 1 GB claim

This file is also the measured child (`--child SIDE PATH`); in that mode it imports only the
standard library and the library under test, so it runs under either interpreter.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TOGETHER_VENV = HERE / ".venv-together"
TOGETHER_VERSION = "1.3.14"
DEFAULT_SOURCE = HERE.parent / "tests" / "data" / "alpaca_en_demo.json"
DEFAULT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"


# -- the measured child ---------------------------------------------------------------------
def child(side: str, path: str, model: str | None) -> None:
    if side == "together":
        from together.utils import check_file

        def run() -> tuple[bool, int | None]:
            report = check_file(path)
            return bool(report.get("is_check_passed")), report.get("num_samples")
    else:
        from tuneserve.data import validate_file

        def run() -> tuple[bool, int | None]:
            report = validate_file(path, model=model) if model else validate_file(path)
            return bool(report.ok), report.n_examples

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    ok, n = run()
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(
        json.dumps(
            {"ok": ok, "n_examples": n, "wall_s": wall, "peak_rss_mb": peak / 1024, "rss_after_import_mb": rss_before / 1024}
        )
    )


# -- set-up -----------------------------------------------------------------------------------
def make_file(source: Path, size_mb: int, out_dir: Path) -> Path:
    """Chat JSONL of about size_mb MB from the alpaca items, each line unique; reused when present."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"alpaca_chat_{size_mb}mb.jsonl"
    target = size_mb * 1_000_000
    if path.exists() and path.stat().st_size >= target:
        return path
    items = json.loads(source.read_text())
    tmp = path.with_suffix(".tmp")
    written, copy = 0, 0
    with open(tmp, "w", encoding="utf-8") as out:
        while written < target:
            copy += 1
            for item in items:
                user = item["instruction"] + ("\n\n" + item["input"] if item.get("input") else "") + f" (#{copy})"
                line = (
                    json.dumps(
                        {
                            "messages": [
                                {"role": "system", "content": "You are a helpful assistant."},
                                {"role": "user", "content": user},
                                {"role": "assistant", "content": item["output"]},
                            ]
                        },
                        ensure_ascii=False,
                    )
                    + "\n"
                )
                out.write(line)
                written += len(line.encode("utf-8"))
                if written >= target:
                    break
    os.replace(tmp, path)
    return path


def together_python() -> Path:
    """The interpreter of the Together venv, created (pip install together==1.3.14) on first use."""
    python = TOGETHER_VENV / "bin" / "python"
    probe = [str(python), "-c", f"import together, sys; sys.exit(together.version != {TOGETHER_VERSION!r})"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    print(f"creating {TOGETHER_VENV} with together=={TOGETHER_VERSION} ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(TOGETHER_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", f"together=={TOGETHER_VERSION}"], check=True)
    subprocess.run(probe, check=True)
    return python


def measure(python: Path, side: str, path: Path, model: str | None, env: dict) -> dict:
    cmd = [str(python), str(Path(__file__).resolve()), "--child", side, str(path)]
    if model:
        cmd += ["--model", model]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{side} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- the comparison -----------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=200, help="size of the generated JSONL file (default 200)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per side; medians are reported (default 3)")
    parser.add_argument("--model-repeat", type=int, default=None, help="runs of the tokenizing side (default: --repeat)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model for the tokenizing side; '' skips it")
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="alpaca JSON the file is made from")
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "tuneserve-bench")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child", nargs=2, metavar=("SIDE", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.model if args.child[0] == "tuneserve+tokens" else None)
        return

    path = make_file(args.source, args.size_mb, args.data_dir)
    size_mb = path.stat().st_size / 1e6
    env = {**os.environ, "TOKENIZERS_PARALLELISM": os.environ.get("TOKENIZERS_PARALLELISM", "true")}
    sides = [("tuneserve", Path(sys.executable), args.repeat), ("together", together_python(), args.repeat)]
    if args.model:
        sides.append(("tuneserve+tokens", Path(sys.executable), args.model_repeat or args.repeat))
    print(f"file: {path} ({size_mb:.1f} MB), {os.cpu_count()} CPUs, {args.repeat} runs per side, medians", flush=True)

    results: dict[str, dict] = {}
    for side, python, runs in sides:
        samples = []
        for i in range(runs):
            sample = measure(python, side, path, args.model if side == "tuneserve+tokens" else None, env)
            print(
                f"  {side:17s} run {i + 1}: {sample['wall_s']:8.2f} s  {size_mb / sample['wall_s']:7.2f} MB/s  "
                f"peak RSS {sample['peak_rss_mb']:7.1f} MB  ok={sample['ok']} n={sample['n_examples']}",
                flush=True,
            )
            samples.append(sample)
        wall = statistics.median(s["wall_s"] for s in samples)
        results[side] = {
            "runs": runs,
            "wall_s": round(wall, 2),
            "mb_per_s": round(size_mb / wall, 2),
            "peak_rss_mb": round(statistics.median(s["peak_rss_mb"] for s in samples), 1),
            "rss_after_import_mb": round(statistics.median(s["rss_after_import_mb"] for s in samples), 1),
            "ok": samples[-1]["ok"],
            "n_examples": samples[-1]["n_examples"],
        }

    print()
    print(f"{'side':18s} {'wall s':>9s} {'MB/s':>8s} {'peak RSS MB':>12s} {'RSS after import':>17s} {'examples':>10s}  ok")
    for side, r in results.items():
        print(
            f"{side:18s} {r['wall_s']:9.2f} {r['mb_per_s']:8.2f} {r['peak_rss_mb']:12.1f} {r['rss_after_import_mb']:17.1f} {str(r['n_examples']):>10s}  {r['ok']}"
        )
    together = results["together"]
    for side in [s for s in results if s != "together"]:
        r = results[side]
        print(
            f"{side} / together: speed x{r['mb_per_s'] / together['mb_per_s']:.2f} (MB/s ratio), "
            f"peak RSS x{r['peak_rss_mb'] / together['peak_rss_mb']:.2f}"
        )
    if "tuneserve+tokens" in results:
        rss = results["tuneserve+tokens"]["peak_rss_mb"]
        print(f"tuneserve+tokens peak RSS {rss:.0f} MB for a {size_mb:.0f} MB file: {'under' if rss < 1024 else 'OVER'} 1 GB")
    if args.json:
        args.json.write_text(json.dumps({"file_mb": round(size_mb, 1), "cpus": os.cpu_count(), "results": results}, indent=1))


if __name__ == "__main__":
    main()
