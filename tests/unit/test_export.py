"""Export: the adapter tar.gz round-trips, and merged weights load in plain transformers with the same greedy output."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY, hf_greedy_ids
from tuneserve.export import ExportError, export_adapter, export_command, export_merged, lookup_local_model, merged_tarball

PROMPTS = ["Who are you?", "What is the capital of Zorbia?", "Write a haiku about the sea."]
NEW_TOKENS = 16


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory, tiny_model_ready) -> Path:
    """A LoRA adapter on the tiny model with random (non-zero) B matrices, saved as training saves it."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_ready, dtype=torch.float32)
    model = get_peft_model(
        base, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM")
    )
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    model.peft_config["default"].base_model_name_or_path = TINY
    out = tmp_path_factory.mktemp("adapter") / "final"
    model.save_pretrained(out, save_embedding_layers=False)
    AutoTokenizer.from_pretrained(tiny_model_ready).save_pretrained(out)
    (out / "trainer_state.pt").write_bytes(b"resume state, not part of the model")
    return out


def greedy(model, tokenizer, question: str) -> list[int]:
    return hf_greedy_ids(model, tokenizer, question, NEW_TOKENS)


def peft_model(adapter: Path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tuneserve.models import resolve_model

    base = AutoModelForCausalLM.from_pretrained(resolve_model(TINY), dtype=torch.float32)
    return PeftModel.from_pretrained(base, adapter).eval()


@pytest.fixture(scope="module")
def peft_outputs(adapter_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    model = peft_model(adapter_dir)
    return [greedy(model, tokenizer, q) for q in PROMPTS]


def test_adapter_tarball_lists_the_peft_files_under_one_folder(adapter_dir, tmp_path):
    out = export_adapter(adapter_dir, tmp_path / "my-model.tar.gz")
    with tarfile.open(out) as tar:
        names = tar.getnames()
    assert names == sorted(names)
    assert {n.split("/")[0] for n in names} == {"my-model"}
    files = {n.split("/", 1)[1] for n in names}
    assert {
        "adapter_model.safetensors",
        "adapter_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
    } <= files
    assert "trainer_state.pt" not in files  # resume state stays behind
    # Stable: the same adapter exports to the same bytes; no temporary file is left.
    again = export_adapter(adapter_dir, tmp_path / "again" / "my-model.tar.gz")
    assert again.read_bytes() == out.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again", "my-model.tar.gz"]


def test_adapter_tarball_round_trips(adapter_dir, peft_outputs, tmp_path):
    from transformers import AutoTokenizer

    out = export_adapter(adapter_dir, tmp_path / "adapter.tar.gz")
    with tarfile.open(out) as tar:
        tar.extractall(tmp_path / "x", filter="data")
    extracted = tmp_path / "x" / "adapter"
    assert json.loads((extracted / "adapter_config.json").read_text())["base_model_name_or_path"] == TINY
    model, tokenizer = peft_model(extracted), AutoTokenizer.from_pretrained(extracted)
    assert [greedy(model, tokenizer, q) for q in PROMPTS] == peft_outputs


def test_merged_loads_in_plain_transformers_with_the_same_greedy_output(adapter_dir, peft_outputs, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = export_merged(adapter_dir, TINY, tmp_path / "merged")
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"} <= names
    assert not any(n.startswith("adapter") for n in names)
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(model).__name__ == "LlamaForCausalLM"  # a plain model: no PEFT wrapper, no LoRA layers
    assert not any("lora" in name for name, _ in model.named_parameters())
    assert model.dtype == torch.float32
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.chat_template == AutoTokenizer.from_pretrained(adapter_dir).chat_template
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    merged = [greedy(model, tokenizer, q) for q in PROMPTS]
    assert merged == peft_outputs
    assert merged != _base_outputs(tokenizer)  # the adapter really changed the model


def _base_outputs(tokenizer):
    from transformers import AutoModelForCausalLM

    from tuneserve.models import resolve_model

    model = AutoModelForCausalLM.from_pretrained(resolve_model(TINY), dtype=torch.float32).eval()
    return [greedy(model, tokenizer, q) for q in PROMPTS]


def test_merged_in_bfloat16(adapter_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    out = export_merged(adapter_dir, TINY, tmp_path / "bf16", dtype="bfloat16")
    assert AutoModelForCausalLM.from_pretrained(out).dtype == torch.bfloat16


def test_merged_tarball_is_built_once(adapter_dir, tmp_path):
    out = merged_tarball(adapter_dir, TINY, tmp_path / "exports" / "m.tar.gz")
    with tarfile.open(out) as tar:
        names = tar.getnames()
    assert "m/model.safetensors" in names and "m/config.json" in names
    mtime = out.stat().st_mtime_ns
    assert merged_tarball(adapter_dir, TINY, out) == out and out.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in out.parent.iterdir() if not p.name.endswith(".lock")) == ["m.tar.gz"]  # no work dir left


def test_export_command_with_an_adapter_directory(adapter_dir, tmp_path):
    assert lookup_local_model(str(adapter_dir)) == (TINY, adapter_dir.resolve())
    tarball = export_command(str(adapter_dir), kind="adapter", output=tmp_path, data_dir=None, database_url=None)
    assert tarball.parent == tmp_path and tarball.name == f"{adapter_dir.parent.name}-adapter.tar.gz"
    assert tarfile.is_tarfile(tarball)
    merged = export_command(str(adapter_dir), kind="merged", output=tmp_path / "merged", data_dir=None, database_url=None)
    assert (merged / "model.safetensors").is_file()


def test_export_command_refuses_what_it_cannot_export(tmp_path):
    with pytest.raises(ExportError, match="base model"):
        export_command(TINY, kind="adapter", output=tmp_path / "x.tar.gz", data_dir=None, database_url=None)
    with pytest.raises(ExportError, match="no tuneserve data"):
        export_command(
            "ftjob-abc", kind="adapter", output=tmp_path / "x.tar.gz", data_dir=tmp_path / "nothing", database_url=None
        )
    with pytest.raises(ExportError, match="unknown model"):
        export_command("no-such/model-xyz", kind="merged", output=tmp_path / "m", data_dir=None, database_url=None)
