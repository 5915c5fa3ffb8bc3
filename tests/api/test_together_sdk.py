"""The official `together` SDK (3.x), unmodified, against a real `tuneserve serve` on the tiny model.

Together's SDK puts /v1 in its own paths (`/v1/files`, `/v1/fine-tunes`), so its base_url is the server's root:
`Together(base_url="http://HOST:PORT", api_key=...)`. Answers are also checked against the SDK's pydantic types
strictly (the SDK itself parses leniently), so a field Together's types require is never missing.
"""

import io
import json
import tarfile
from pathlib import Path

import pytest

from tests.conftest import TINY, chat_jsonl, wait_for

together = pytest.importorskip("together")


def preference_jsonl(n: int) -> bytes:
    lines = [
        {
            "input": {"messages": [{"role": "user", "content": f"Question {i}: what is the capital of Zorbia?"}]},
            "preferred_output": [{"role": "assistant", "content": "Quillton."}],
            "non_preferred_output": [{"role": "assistant", "content": "I do not know."}],
        }
        for i in range(n)
    ]
    return ("\n".join(json.dumps(line) for line in lines) + "\n").encode()


@pytest.fixture
def tg(server):
    return together.Together(base_url=server.base_url, api_key="no-key", max_retries=0)


def upload(tg, tmp_path: Path, name: str, data: bytes, check: bool = True):
    path = tmp_path / name
    path.write_bytes(data)
    return tg.files.upload(file=path, purpose="fine-tune", check=check)


def wait_until_done(tg, job_id: str, timeout_s: float = 300):
    done = {"completed", "error", "cancelled"}
    return wait_for(lambda: (job := tg.fine_tuning.retrieve(job_id)).status in done and job, timeout_s, f"job {job_id}", 0.5)


def strict(model, raw) -> None:
    """The raw answer validates in the SDK's type, strictly (not only as its lenient construct)."""
    model.model_validate(raw.http_response.json())


def error_of(raised) -> dict:
    """The OpenAI-shaped error of a raised SDK error (or of pytest's ExceptionInfo of one)."""
    body = getattr(raised, "value", raised).body
    return body["error"] if "error" in body else body


def tar_names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return tar.getnames()


def test_files_upload_list_retrieve_content_delete(tg, tmp_path):
    data = chat_jsonl(12)
    uploaded = upload(tg, tmp_path, "train.jsonl", data)
    assert uploaded.id.startswith("file-") and uploaded.filename == "train.jsonl" and uploaded.bytes == len(data)
    assert uploaded.file_type == "jsonl" and uploaded.purpose == "fine-tune" and uploaded.processing_status == "COMPLETED"

    assert uploaded.id in [f.id for f in tg.files.list().data]
    got = tg.files.retrieve(uploaded.id)
    assert (got.id, got.filename, got.bytes, got.purpose) == (uploaded.id, "train.jsonl", len(data), "fine-tune")
    assert tg.files.content(uploaded.id).read() == data

    deleted = tg.files.delete(uploaded.id)
    assert deleted.id == uploaded.id and deleted.deleted is True
    with pytest.raises(together.NotFoundError):
        tg.files.retrieve(uploaded.id)


def test_a_file_past_the_multipart_threshold_goes_up_in_parts(tg, server, tmp_path, monkeypatch):
    """The SDK's own multipart flow (initiate, a PUT per part, complete), its sizes scaled down: 5 GB to 100 kB
    for the threshold, 5 MB to 100 kB for the parts (the test server takes files up to 300,000 bytes)."""
    from together.lib.resources import files as sdk_files

    kb100 = 100 * 1024
    monkeypatch.setattr(sdk_files, "MULTIPART_THRESHOLD_GB", kb100 / sdk_files.NUM_BYTES_IN_GB)
    monkeypatch.setattr(sdk_files, "_calculate_parts", lambda size: (kb100, -(-size // kb100)))  # (part size, count)
    sent = []
    put_part = sdk_files.MultipartUploadManager._upload_single_part

    def counted(self, part_info, part_data):
        sent.append(len(part_data))
        return put_part(self, part_info, part_data)

    monkeypatch.setattr(sdk_files.MultipartUploadManager, "_upload_single_part", counted)
    data = chat_jsonl(1500)
    assert 2 * kb100 < len(data) < 300_000  # three parts
    uploaded = upload(tg, tmp_path, "big.jsonl", data)
    assert sorted(sent) == sorted([kb100, kb100, len(data) - 2 * kb100])
    assert uploaded.id.startswith("file-") and uploaded.bytes == len(data) and uploaded.filename == "big.jsonl"
    assert tg.files.content(uploaded.id).read() == data

    # A bad line fails the completion with the line named; the SDK then aborts, and no part is left behind.
    bad = data.replace(b"\n", b"\n{not json\n", 1)
    with pytest.raises(together.APIStatusError) as info:
        upload(tg, tmp_path, "bad.jsonl", bad, check=False)
    assert info.value.status_code == 400 and "line 2" in str(info.value)
    # Past the server's limit, the first request is refused: no part is sent.
    sent.clear()
    with pytest.raises(together.APIStatusError) as info:
        upload(tg, tmp_path, "huge.jsonl", chat_jsonl(2000))
    assert info.value.status_code == 413 and error_of(info)["param"] == "file_size" and sent == []
    pending = server.data_dir / "together_uploads"
    assert not list(pending.glob("*.parts")) and not list(pending.glob("*.json"))


def test_bad_training_data_is_refused_at_upload(tg, tmp_path):
    """The PUT runs tuneserve's own check (the SDK's is skipped here): the 400 names the line."""
    bad = chat_jsonl(3) + b'{"messages": [{"role": "user", "content": "no answer"}]}\n'
    with pytest.raises(together.APIStatusError) as info:
        upload(tg, tmp_path, "bad.jsonl", bad, check=False)
    assert info.value.status_code == 400 and "line 4" in str(info.value)


def test_fine_tune_with_together_parameters_then_chat_download_and_delete(tg, server, tmp_path):
    train = upload(tg, tmp_path, "train.jsonl", chat_jsonl(12))
    valid = upload(tg, tmp_path, "valid.jsonl", chat_jsonl(4))
    job = tg.fine_tuning.create(
        model=TINY,
        training_file=train.id,
        validation_file=valid.id,
        n_epochs=2,
        n_checkpoints=2,
        n_evals=1,
        batch_size=4,
        learning_rate=1e-3,
        lr_scheduler_type="linear",
        min_lr_ratio=0.1,
        warmup_ratio=0.1,
        max_grad_norm=0.5,
        weight_decay=0.01,
        max_seq_length=256,
        suffix="together",
        random_seed=7,
        lora=True,
        lora_r=4,
        lora_alpha=8,
        lora_dropout=0.05,
        lora_trainable_modules="all-linear",
        train_on_inputs=False,
    )
    assert job.status in ("pending", "queued", "running") and job.model == TINY
    raw = tg.fine_tuning.with_raw_response.retrieve(job.id)
    strict(together.types.FinetuneResponse, raw)
    got = raw.parse()
    assert (got.n_epochs, got.batch_size, got.learning_rate, got.warmup_ratio, got.max_grad_norm) == (2, 4, 1e-3, 0.1, 0.5)
    assert got.training_type.lora_r == 4 and got.training_type.lora_alpha == 8 and got.training_type.lora_dropout == 0.05
    assert got.lr_scheduler.lr_scheduler_type == "linear" and got.lr_scheduler.lr_scheduler_args.min_lr_ratio == 0.1
    assert got.training_method.method == "sft" and got.training_method.train_on_inputs is False
    assert got.validation_file == valid.id and got.n_checkpoints == 2 and got.n_evals == 1
    assert job.id in [j.id for j in tg.fine_tuning.list().data]
    strict(together.types.FineTuningListResponse, tg.fine_tuning.with_raw_response.list())

    done = wait_until_done(tg, job.id)
    assert done.status == "completed", done
    model = done.x_model_output_name
    assert model.startswith(f"ft:{TINY}:") and ":together:" in model

    raw = tg.fine_tuning.with_raw_response.list_events(job.id)
    strict(together.types.FineTuningListEventsResponse, raw)
    types = [e.type for e in raw.parse().data]
    assert types[0] == "job_pending" and types[-1] == "job_complete" and "checkpoint_save" in types

    raw = tg.fine_tuning.with_raw_response.list_metrics(job.id)
    strict(together.types.FineTuningListMetricsResponse, raw)
    metrics = raw.parse().metrics
    assert [m["global_step"] for m in metrics] == sorted(m["global_step"] for m in metrics) and "train_loss" in metrics[0]
    assert len(tg.fine_tuning.list_metrics(job.id, resolution=2).metrics) == 2
    assert all(m["global_step"] >= 2 for m in tg.fine_tuning.list_metrics(job.id, global_step_from=2).metrics)
    assert tg.fine_tuning.list_metrics(job.id, logged_at_to="2001-01-01T00:00:00Z").metrics == []

    raw = tg.fine_tuning.with_raw_response.list_checkpoints(job.id)
    strict(together.types.FineTuningListCheckpointsResponse, raw)
    checkpoints = raw.parse().data
    assert checkpoints[0].checkpoint_type == "Final" and checkpoints[0].path == model
    intermediate = [c for c in checkpoints if c.checkpoint_type != "Final"]
    assert len(intermediate) == 2 and all(c.path.startswith(model + ":ckpt-step-") for c in intermediate)

    # Downloads: the SDK's content() (the adapter of a checkpoint), and the CLI's ranged DownloadManager (merged).
    step = intermediate[-1].step
    adapter = tg.fine_tuning.content(ft_id=job.id, checkpoint="adapter", checkpoint_step=step).read()
    assert any(name.endswith("adapter_config.json") for name in tar_names(adapter))
    from together.lib import DownloadManager

    path, size = DownloadManager(tg).download(
        url=f"/v1/finetune/download?ft_id={job.id}&checkpoint=merged", output=tmp_path / "merged.tar.gz", fetch_metadata=True
    )
    names = tar_names(Path(path).read_bytes())
    assert size > 0 and any(n.endswith("config.json") for n in names) and not any("adapter_config" in n for n in names)

    # Chat and completions on the model's name as the Together job gives it, plain and streamed.
    messages = [{"role": "user", "content": "Question 1: what is the capital of Zorbia?"}]
    chat = tg.chat.completions.create(model=model, messages=messages, max_tokens=8)
    assert chat.choices[0].message.role == "assistant" and chat.model == model and chat.usage.completion_tokens > 0
    chunks = list(tg.chat.completions.create(model=model, messages=messages, max_tokens=8, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) != ""
    text = tg.completions.create(model=model, prompt="The capital of Zorbia is", max_tokens=5)
    assert text.choices[0].text and text.model == model
    streamed = list(tg.completions.create(model=model, prompt="The capital of Zorbia is", max_tokens=5, stream=True))
    assert "".join(c.choices[0].text or "" for c in streamed if c.choices) != ""

    # Continue from a checkpoint (JOB_ID:STEP), long enough to be still going when it is cancelled.
    follow = tg.fine_tuning.create(training_file=train.id, from_checkpoint=f"{job.id}:{step}", n_epochs=30, batch_size=4)
    assert follow.from_checkpoint == f"{job.id}:{step}"
    # Delete is refused while a job may run, and while a job that may run continues from its model.
    with pytest.raises(together.ConflictError) as info:
        tg.fine_tuning.delete(follow.id)
    assert error_of(info)["code"] == "job_not_deletable"
    with pytest.raises(together.ConflictError) as info:
        tg.fine_tuning.delete(job.id)
    assert error_of(info)["code"] == "job_in_use" and follow.id in error_of(info)["message"]
    raw = tg.fine_tuning.with_raw_response.cancel(follow.id)
    strict(together.types.FineTuningCancelResponse, raw)
    assert raw.parse().status == "cancelled"

    # Once ended, a job is deleted with its events, checkpoints, weights and served models.
    raw = wait_for(lambda: deleted_or_none(tg, follow.id), 60, f"{follow.id} deletable once its run has stopped", 0.5)
    strict(together.types.FineTuningDeleteResponse, raw)
    assert follow.id in raw.parse().message
    job_dir = server.data_dir / "jobs" / job.id
    assert (job_dir / "final").is_dir()
    assert job.id in tg.fine_tuning.delete(job.id).message
    assert not job_dir.exists() and not (server.data_dir / "jobs" / follow.id).exists()
    listed = [j.id for j in tg.fine_tuning.list().data]
    assert job.id not in listed and follow.id not in listed
    for gone in (lambda: tg.fine_tuning.retrieve(job.id), lambda: tg.fine_tuning.list_events(job.id)):
        with pytest.raises(together.NotFoundError):
            gone()
    for name in (model, intermediate[0].path):  # the final model and a checkpoint's: neither is served now
        with pytest.raises(together.NotFoundError):
            tg.chat.completions.create(model=name, messages=messages, max_tokens=4)
    with pytest.raises(together.NotFoundError):
        tg.fine_tuning.delete(job.id)


def deleted_or_none(tg, job_id: str):
    """The raw answer of deleting `job_id`, or None while its run is still stopping (a 409 that says so)."""
    try:
        return tg.fine_tuning.with_raw_response.delete(job_id)
    except together.ConflictError as exc:
        assert error_of(exc)["code"] == "job_still_stopping", exc.body
        return None


def test_preview_tokenizes_the_rows_as_training_does(tg, tmp_path):
    train = upload(tg, tmp_path, "train.jsonl", chat_jsonl(12))
    raw = tg.fine_tuning.with_raw_response.preview(model=TINY, training_file=train.id, top_k=2)
    strict(together.types.FineTunePreviewResponse, raw)
    preview = raw.parse()
    assert preview.dataset_format == "conversation" and preview.model == TINY and preview.train_on_inputs is False
    assert len(preview.rows) == 2 and preview.max_seq_length == 1024
    row = preview.rows[0]
    assert row.num_tokens == len(row.input_ids) == len(row.labels) == len(row.tokens) and not row.truncated
    trained = {i for start, end in row.trained_spans for i in range(start, end)}
    assert row.num_trained_tokens == len(trained) > 0
    # Labels are the ids on trained positions, -100 elsewhere: only the answer (and its end of turn) is trained.
    assert all(label == (row.input_ids[i] if i in trained else -100) for i, label in enumerate(row.labels))
    from tuneserve.models import load_tokenizer

    tokenizer = load_tokenizer(TINY)
    answer = tokenizer.decode([row.input_ids[i] for i in sorted(trained)])
    assert answer.strip() == "The capital of Zorbia is Quillton.<|im_end|>"
    assert tokenizer.convert_ids_to_tokens(row.input_ids) == row.tokens

    everything = tg.fine_tuning.preview(model=TINY, training_file=train.id, top_k=1, train_on_inputs=True).rows[0]
    assert everything.labels == everything.input_ids == row.input_ids and everything.trained_spans == [[0, row.num_tokens]]

    pairs = upload(tg, tmp_path, "pairs.jsonl", preference_jsonl(10), check=False)
    with pytest.raises(together.BadRequestError) as info:
        tg.fine_tuning.preview(model=TINY, training_file=pairs.id)
    assert error_of(info)["param"] == "training_file" and "SFT data only" in error_of(info)["message"]
    with pytest.raises(together.NotFoundError) as info:
        tg.fine_tuning.preview(model=TINY, training_file="file-nosuchfile")
    assert error_of(info)["param"] == "training_file"


def test_dpo(tg, tmp_path):
    pairs = upload(tg, tmp_path, "pairs.jsonl", preference_jsonl(10), check=False)
    job = tg.fine_tuning.create(model=TINY, training_file=pairs.id, training_method="dpo", dpo_beta=0.2, batch_size=4)
    assert job.training_method.method == "dpo" and job.training_method.dpo_beta == 0.2
    done = wait_until_done(tg, job.id)
    assert done.status == "completed", done


@pytest.mark.parametrize(
    "options, param",
    [
        ({"wandb_api_key": "secret"}, "wandb_key"),
        ({"hf_output_repo_name": "me/model"}, "hf_output_repo_name"),
        ({"training_method": "dpo", "rpo_alpha": 0.5}, "training_method.rpo_alpha"),
        ({"scheduler_num_cycles": 2.0}, "lr_scheduler.lr_scheduler_args.num_cycles"),
    ],
)
def test_parameter_tuneserve_cannot_honour_is_a_400_naming_it(tg, tmp_path, options, param):
    train = upload(tg, tmp_path, "train.jsonl", chat_jsonl(12))
    with pytest.raises(together.BadRequestError) as info:
        tg.fine_tuning.create(model=TINY, training_file=train.id, **options)
    error = error_of(info)
    assert error["param"] == param and "not supported by tuneserve" in error["message"]


def test_full_fine_tuning_and_packing_off_then_cancel(tg, tmp_path):
    train = upload(tg, tmp_path, "train.jsonl", chat_jsonl(12))
    job = tg.fine_tuning.create(model=TINY, training_file=train.id, lora=False, packing=False, lr_scheduler_type="cosine")
    assert job.training_type.type == "Full" and job.lr_scheduler.lr_scheduler_type == "cosine"
    assert tg.fine_tuning.cancel(job.id).status == "cancelled"
    with pytest.raises(together.APIStatusError) as info:  # only a completed job has a model to download
        tg.fine_tuning.content(ft_id=job.id, checkpoint="merged").read()
    assert info.value.status_code == 409


def test_model_limits(tg):
    limits = tg.fine_tuning.model_limits(model_name=TINY)
    assert limits.lora_training.default_rank == 16 and limits.max_num_epochs == 50 and limits.supports_full_training
    with pytest.raises(together.NotFoundError):
        tg.fine_tuning.model_limits(model_name="ftjob-nosuchjob")
