"""GET /v1/fine_tuning/jobs/{id}/download (a tuneserve extension): the adapter or merged weights as a tar.gz."""

from __future__ import annotations

import io
import tarfile

import httpx
import pytest

from tests.conftest import TINY, chat_jsonl, fine_tune_tiny

QUESTION = [{"role": "user", "content": "Question 3: what is the capital of Zorbia?"}]


@pytest.fixture(scope="module")
def tuned(server):
    return fine_tune_tiny(server.client(), chat_jsonl(12), "download", n_epochs=2, learning_rate_multiplier=10)


def download(server, job_id: str, **params) -> httpx.Response:
    return httpx.get(f"{server.base_url}/v1/fine_tuning/jobs/{job_id}/download", params=params, timeout=300)


def unpack(response: httpx.Response, into) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as tar:
        tar.extractall(into, filter="data")
        return tar.getnames()


def test_adapter_download(server, tuned, tmp_path):
    reply = download(server, tuned.id, type="adapter")
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/gzip"
    assert int(reply.headers["content-length"]) == len(reply.content)
    assert f'filename="{tuned.id}-adapter.tar.gz"' in reply.headers["content-disposition"]
    names = unpack(reply, tmp_path)
    top = f"{tuned.id}-adapter"
    assert {
        f"{top}/adapter_model.safetensors",
        f"{top}/adapter_config.json",
        f"{top}/tokenizer.json",
        f"{top}/chat_template.jinja",
    } <= set(names)

    from peft import PeftConfig

    assert PeftConfig.from_pretrained(tmp_path / top).base_model_name_or_path == TINY
    assert download(server, tuned.id).content == reply.content  # type defaults to adapter; built once


def test_checkpoint_adapter_download(server, tuned, tmp_path):
    checkpoint = server.client().fine_tuning.jobs.checkpoints.list(tuned.id).data[-1]
    reply = download(server, tuned.id, type="adapter", checkpoint_step=checkpoint.step_number)
    assert reply.status_code == 200
    names = unpack(reply, tmp_path)
    assert f"{tuned.id}-adapter/adapter_model.safetensors" in names
    assert not any(n.endswith("trainer_state.pt") for n in names)  # the resume state stays on the server
    missing = download(server, tuned.id, type="adapter", checkpoint_step=999)
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "checkpoint_step"


def test_merged_download_loads_in_plain_transformers(server, tuned, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    reply = download(server, tuned.id, type="merged")
    assert reply.status_code == 200 and reply.headers["content-type"] == "application/gzip"
    assert int(reply.headers["content-length"]) == len(reply.content)
    assert f'filename="{tuned.id}-merged.tar.gz"' in reply.headers["content-disposition"]
    names = unpack(reply, tmp_path)
    root = tmp_path / f"{tuned.id}-merged"
    assert f"{tuned.id}-merged/model.safetensors" in names and not any("adapter" in n for n in names)
    model = AutoModelForCausalLM.from_pretrained(root).eval()
    assert type(model).__name__ == "LlamaForCausalLM"
    tokenizer = AutoTokenizer.from_pretrained(root)

    # The merged model answers as the served fine-tuned model does (greedy).
    served = server.client().chat.completions.create(
        model=tuned.fine_tuned_model, messages=QUESTION, temperature=0, max_tokens=12
    )
    text = tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=False)
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(
            ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=12, pad_token_id=tokenizer.pad_token_id
        )
    assert tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True) == served.choices[0].message.content

    # Built once: cached in the job's exports/ and served again as the same bytes.
    assert download(server, tuned.id, type="merged").content == reply.content
    assert (server.data_dir / "jobs" / tuned.id / "exports" / f"{tuned.id}-merged.tar.gz").is_file()


def test_unfinished_and_cancelled_jobs_are_409(server, tuned):
    client = server.client()
    job = client.fine_tuning.jobs.create(model=TINY, training_file=tuned.training_file, hyperparameters={"n_epochs": 1})
    early = download(server, job.id)  # validating, queued or running: not yet a model
    assert early.status_code == 409 and early.json()["error"]["code"] == "job_not_succeeded"
    client.fine_tuning.jobs.cancel(job.id)
    cancelled = download(server, job.id, type="merged")
    assert cancelled.status_code == 409
    error = cancelled.json()["error"]
    assert error["code"] == "job_not_succeeded" and "cancelled" in error["message"]


def test_unknown_job_and_bad_type(server, tuned):
    missing = download(server, "ftjob-doesnotexist")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "job_not_found"
    bad = download(server, tuned.id, type="onnx")
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "type"


def test_export_command_looks_jobs_up_in_the_servers_store(server, tuned, tmp_path):
    """`tuneserve export` by job id, ft: model name and checkpoint name, from the server's data dir."""
    import subprocess
    import sys

    from tuneserve.export import ExportError, export_command

    by_id = export_command(tuned.id, kind="adapter", output=tmp_path / "a.tar.gz", data_dir=server.data_dir, database_url=None)
    by_name = export_command(tuned.fine_tuned_model, kind="adapter", output=tmp_path, data_dir=server.data_dir, database_url=None)
    assert by_name == tmp_path / f"{tuned.id}-adapter.tar.gz" and by_name.read_bytes() != b""
    with tarfile.open(by_id) as a, tarfile.open(by_name) as b:
        assert [m.name.split("/", 1)[1] for m in a] == [m.name.split("/", 1)[1] for m in b]
    checkpoint = server.client().fine_tuning.jobs.checkpoints.list(tuned.id).data[-1]
    merged = export_command(
        checkpoint.fine_tuned_model_checkpoint,
        kind="merged",
        output=tmp_path / "merged",
        data_dir=server.data_dir,
        database_url=None,
    )
    assert (merged / "model.safetensors").is_file() and (merged / "chat_template.jinja").is_file()
    with pytest.raises(ExportError, match="project 'other'"):
        export_command(
            tuned.id, kind="adapter", output=tmp_path / "b.tar.gz", data_dir=server.data_dir, database_url=None, project="other"
        )
    from tuneserve.cli import build_parser

    commands = next(a.choices for a in build_parser()._subparsers._group_actions if a.choices)
    command = ["tuneserve", "export"] if "export" in commands else ["tuneserve.export"]  # the same function
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            *command,
            tuned.fine_tuned_model,
            "--type",
            "merged",
            "-o",
            str(tmp_path / "m.tar.gz"),
            "--data-dir",
            str(server.data_dir),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert tarfile.is_tarfile(tmp_path / "m.tar.gz")
