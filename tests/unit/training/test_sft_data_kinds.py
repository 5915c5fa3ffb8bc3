"""The SFT recipe on the other record kinds: raw text trains on every token, tool-call data trains,
preference data is refused before a model loads, and the run records its measured throughput."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuneserve.data import load_examples
from tuneserve.data.records import DataError
from tuneserve.data.formatting import format_examples

from tests.unit.training.conftest import NAMES, make_spec, read_events

pytestmark = pytest.mark.training  # runs a real training loop: not in make test-fast


@pytest.fixture
def recorded(monkeypatch):
    """Capture record_throughput calls instead of writing the shared cache."""
    import tuneserve.models.throughput as throughput

    calls = []
    monkeypatch.setattr(
        throughput, "record_throughput", lambda model_ref, device, tps: calls.append((model_ref, device, tps)) or tps
    )
    return calls


def test_text_data_trains_on_every_token(tmp_path, tokenizer, recorded):
    from tuneserve.training.run import train

    data = tmp_path / "text.jsonl"
    data.write_text("".join(json.dumps({"text": f"{n} is a friend of Nova. {n} likes tea."}) + "\n" for n in NAMES))
    spec = make_spec(data, hyperparameters={"n_epochs": 3}, logging_steps=1)
    result = train(spec, tmp_path / "job")

    formatted, dropped = format_examples(tokenizer, load_examples(data), spec.max_seq_length)
    assert dropped == 0 and len(formatted) == 16
    assert all(f.labels == f.input_ids for f in formatted)  # loss on the whole text
    assert result["trained_tokens"] == 3 * sum(len(f.input_ids) for f in formatted)

    events = read_events(tmp_path / "job")
    epoch_losses = [e["metrics"]["train_loss"] for e in events if e["type"] == "checkpoint"]
    assert len(epoch_losses) == 3 and epoch_losses[-1] < epoch_losses[0]
    (call,) = recorded
    assert call[:2] == ("tuneserve/tiny-random", "cpu") and call[2] > 0


def test_tool_call_data_trains(tmp_path, sample_file, recorded):
    from tuneserve.training.run import train

    items = json.loads(sample_file("glaive_toolcall_en_demo.json").read_text())
    with_calls = [item for item in items if any(t["from"] == "function_call" for t in item["conversations"])][:8]
    data = tmp_path / "tools.json"
    data.write_text(json.dumps(with_calls))
    result = train(make_spec(data, hyperparameters={"n_epochs": 1}, max_seq_length=128), tmp_path / "job")
    assert result["trained_tokens"] > 0
    assert (tmp_path / "job" / "final" / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize(
    "record",
    [
        {"prompt": "Who is Ada?", "chosen": "A friend of Nova.", "rejected": "Nobody."},
        {
            "input": {"messages": [{"role": "user", "content": "Who is Ada?"}]},
            "preferred_output": [{"role": "assistant", "content": "A friend."}],
            "non_preferred_output": [{"role": "assistant", "content": "No."}],
        },
    ],
)
def test_preference_data_is_refused_before_the_model_loads(tmp_path, record, recorded):
    from tuneserve.training.run import train

    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps(record) + "\n")
    with pytest.raises(DataError) as info:
        train(make_spec(data), tmp_path / "job")
    assert "preference data needs method dpo" in str(info.value)
    assert info.value.code == "preference_data_for_sft"
    messages = [e["message"] for e in read_events(tmp_path / "job") if e["type"] == "message"]
    assert not any(m.startswith("Loaded ") for m in messages)
    assert recorded == []


def test_a_failing_throughput_record_never_fails_the_run(tmp_path, monkeypatch):
    import tuneserve.models.throughput as throughput
    from tuneserve.training.run import train

    def broken(*args):
        raise OSError("read-only cache")

    monkeypatch.setattr(throughput, "record_throughput", broken)
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Who is {n}?", "completion": f"{n} is a friend."}) + "\n" for n in NAMES[:4]))
    result = train(make_spec(data, hyperparameters={"n_epochs": 1}), tmp_path / "job")
    assert Path(result["adapter_path"]).is_dir()
    warnings = [e["message"] for e in read_events(tmp_path / "job") if e["type"] == "message" and e["level"] == "warn"]
    assert warnings == ["Could not record the training throughput: OSError: read-only cache"]
