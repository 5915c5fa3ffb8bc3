"""`python benchmarks/gpu_suite.py --dry-run` as the README runs it, from the repository root: every check of
the GPU suite runs its code path on CPU (tiny shapes, fp32), so GPU-only code cannot rot unseen."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import clean_environment

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def test_the_gpu_suite_dry_run_passes_every_check(tmp_path, tiny_model_ready):
    out = tmp_path / "suite.json"
    result = subprocess.run(
        [sys.executable, "benchmarks/gpu_suite.py", "--dry-run", "--json", str(out)],
        cwd=ROOT,
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    report = json.loads(out.read_text())
    checks = report["results"]
    assert set(checks) == {"lora_1b", "lora_8b", "step_options", "full_fsdp", "qlora", "padding_free", "serving", "smollm2"}
    assert all(r["ok"] is True for r in checks.values()), {n: r["figures"] for n, r in checks.items() if r["ok"] is not True}
    # What each path did, beyond not failing:
    assert checks["full_fsdp"]["sharded"] and checks["full_fsdp"]["backend"] == "gloo"
    assert checks["qlora"]["losses"][-1] < checks["qlora"]["losses"][0]
    assert checks["qlora"]["qlora_peak_memory_gb"] < checks["qlora"]["lora_peak_memory_gb"]
    assert checks["padding_free"]["results"]["padding_free"]["batching"] == "packed"
    assert checks["padding_free"]["loss_rel_diff"] < 1e-4
    assert checks["lora_1b"]["top_ops"] and 0 < checks["lora_1b"]["mfu"]
    assert set(checks["serving"]["tokens_per_s"]) == {"1", "2", "4"}
    assert f"{len(checks)} passed, 0 failed" in result.stdout
