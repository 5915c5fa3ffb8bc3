"""`tuneserve demo` as README's first command runs it: SmolLM2 learns a new identity with all
"auto" hyperparameters, and names itself when asked paraphrases it was not trained on."""

import json
import subprocess
import sys

import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.e2e


def test_demo_teaches_the_new_name(tmp_path):
    result = subprocess.run([sys.executable, "-m", "tuneserve", "demo", "--port", str(free_port()), "--data-dir",
                             str(tmp_path / "demo")], capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["paraphrases_named_base"] == 0
    assert summary["paraphrases_named_fine_tuned"] >= 6, summary
    assert "I am Nova" in result.stdout or "I'm Nova" in result.stdout
