"""The OPEA fine-tuning micro-service's README curl commands, run with real curl.

Only the host, the model (the offline tiny model instead of Llama-2-7b) and the job id
(substituted, quoted) differ from the seed's commands.
"""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import TINY, wait_for_status

# The first 10 items of the seed's alpaca_en_demo.json, kept in the repo so a clean clone runs this.
ALPACA = Path(__file__).parent / "data" / "alpaca_data.json"

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


def curl(command: str, cwd: Path) -> object:
    out = subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, text=True, timeout=60, check=True).stdout
    return json.loads(out)


def test_opea_readme_commands(server, tmp_path):
    items = json.loads(ALPACA.read_text())  # the minimum of 10 examples; "auto" gives 25 epochs of 3 steps
    assert len(items) == 10
    (tmp_path / "alpaca_data.json").write_text(json.dumps(items))
    host = f"127.0.0.1:{server.port}"

    uploaded = curl(
        f'curl http://{host}/v1/files -X POST -H "Content-Type: multipart/form-data" '
        f'-F "file=@./alpaca_data.json" -F purpose="fine-tune"',
        tmp_path,
    )
    assert uploaded["object"] == "file" and uploaded["filename"] == "alpaca_data.json" and uploaded["id"].startswith("file-")

    job = curl(
        f"""curl http://{host}/v1/fine_tuning/jobs \\
      -X POST \\
      -H "Content-Type: application/json" \\
      -d '{{
        "training_file": "alpaca_data.json",
        "model": "{TINY}"
      }}'""",
        tmp_path,
    )
    assert job["object"] == "fine_tuning.job" and job["training_file"] == uploaded["id"]  # the name resolved to the id
    job_id = job["id"]

    listed = curl(f"curl http://{host}/v1/fine_tuning/jobs -X GET", tmp_path)
    assert job_id in [j["id"] for j in listed["data"]]

    retrieved = curl(
        f"""curl http://{host}/v1/fine_tuning/jobs/retrieve -X POST -H "Content-Type: application/json" """
        f"""-d '{{"fine_tuning_job_id": "{job_id}"}}'""",
        tmp_path,
    )
    assert retrieved["id"] == job_id

    wait_for_status(server.client(), job_id, {"succeeded", "failed"}, timeout_s=180)
    checkpoints = curl(
        f"""curl http://{host}/v1/finetune/list_checkpoints -X POST -H "Content-Type: application/json" """
        f"""-d '{{"fine_tuning_job_id": "{job_id}"}}'""",
        tmp_path,
    )
    assert isinstance(checkpoints, list) and checkpoints  # OPEA returns a bare array
    assert all(c["object"] == "fine_tuning.job.checkpoint" and c["fine_tuning_job_id"] == job_id for c in checkpoints)

    second = curl(
        f"""curl http://{host}/v1/fine_tuning/jobs -X POST -H "Content-Type: application/json" """
        f"""-d '{{"training_file": "alpaca_data.json", "model": "{TINY}", "Training": {{"epochs": 30}}}}'""",
        tmp_path,
    )
    assert second["hyperparameters"]["n_epochs"] == 30  # OPEA's Training section maps onto the job
    cancelled = curl(
        f"""curl http://{host}/v1/fine_tuning/jobs/cancel -X POST -H "Content-Type: application/json" """
        f"""-d '{{"fine_tuning_job_id": "{second["id"]}"}}'""",
        tmp_path,
    )
    assert cancelled["status"] == "cancelled"


def test_opea_unknown_job_is_404_envelope(server, tmp_path):
    out = subprocess.run(
        [
            "curl",
            "-s",
            "-w",
            "\\n%{http_code}",
            f"http://127.0.0.1:{server.port}/v1/fine_tuning/jobs/retrieve",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-d",
            '{"fine_tuning_job_id": "ftjob-nope"}',
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    body, status = out.rsplit("\n", 1)
    assert status == "404" and json.loads(body)["error"]["code"] == "job_not_found"
