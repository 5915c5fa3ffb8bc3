"""GGUF export: a fine-tuned tiny model written as GGUF reads back (transformers' GGUF loader, the one tuneserve uses for
its own SmolLM2) with the merged model's logits, tokens and chat template, and its Ollama Modelfile says the same."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY
from tests.unit.test_export import adapter_dir  # noqa: F401  (the fixture: a LoRA adapter with non-zero weights)
from tuneserve.export import ExportError, export_command, export_merged, main
from tuneserve.gguf_export import CHATML_TEMPLATE, GGUFError, chatml_system, llama_hparams, pre_tokenizer_name

PROMPTS = ["Who are you?", "What is the capital of Zorbia?", "Add 1234 and 5678, then say 'done'."]
# Against the float32 merged model: f16 keeps about 3 significant digits of each weight, q8_0 about 2 (one scale per
# 32 weights). The test adapter's large random weights make the tiny model's logits move by about 0.4% (f16) and 11%
# (q8_0) of their largest value; the bounds leave room over that, and the exact check below is the sharp one.
F16_TOLERANCE = 1e-2
Q8_0_TOLERANCE = 0.25
# Against the merged model with its matrices rounded the same way (norms stay float32 in the file): only float32
# arithmetic in another order is left, so any mistake in names, layout or rotary permutation would show far above this.
SAME_ROUNDING_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def merged_dir(adapter_dir, tmp_path_factory) -> Path:  # noqa: F811
    return export_merged(adapter_dir, TINY, tmp_path_factory.mktemp("merged") / "m", dtype="float32")


@pytest.fixture(scope="module")
def gguf_dir(adapter_dir, tmp_path_factory) -> Path:  # noqa: F811
    """f16 and q8_0 GGUFs of the fine-tuned model, each through `tuneserve export --format gguf` as the CLI calls it."""
    out = tmp_path_factory.mktemp("gguf")
    for quant in ("f16", "q8_0"):
        written = export_command(str(adapter_dir), kind="gguf", output=out / f"model-{quant}.gguf", quant=quant)
        assert written == out / f"model-{quant}.gguf"
    return out


@pytest.fixture(scope="module")
def merged_model(merged_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).eval()


def _load_gguf(directory: Path, name: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(directory, gguf_file=name)


def _chat_ids(tokenizer, question: str) -> torch.Tensor:
    text = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False)
    return tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]


def _logit_gaps(reference, model, tokenizer) -> list[tuple[float, float]]:
    """Per prompt: (max |logit difference|, max |logit|)."""
    gaps = []
    with torch.no_grad():
        for question in PROMPTS:
            ids = _chat_ids(tokenizer, question)
            expected, got = reference(ids).logits, model(ids).logits
            gaps.append(((expected - got).abs().max().item(), expected.abs().max().item()))
    return gaps


def _rounded(model, round_matrix):
    """A copy of `model` with every 2-D weight passed through `round_matrix` (what the GGUF stores)."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim == 2:
                param.copy_(torch.from_numpy(round_matrix(param.numpy())))
    return model


def _q8_0_round(matrix):
    from gguf import GGMLQuantizationType, quants

    return quants.dequantize(quants.quantize(matrix, GGMLQuantizationType.Q8_0), GGMLQuantizationType.Q8_0)


def test_f16_gguf_reads_back_with_the_merged_models_logits_tokens_and_template(merged_dir, merged_model, gguf_dir):
    from transformers import AutoTokenizer

    reference = merged_model
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    model, gguf_tokenizer = _load_gguf(gguf_dir, "model-f16.gguf")

    for name in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads"):
        assert getattr(model.config, name) == getattr(reference.config, name), name
    assert model.config.vocab_size == reference.config.vocab_size and model.config.tie_word_embeddings
    assert model.config.max_position_embeddings == reference.config.max_position_embeddings
    assert model.config.rms_norm_eps == pytest.approx(reference.config.rms_norm_eps)

    # The tokenizer round-trips: the same ids for a chat prompt (specials, digits, punctuation), the same template and ids.
    assert gguf_tokenizer.chat_template == tokenizer.chat_template
    for question in PROMPTS:
        assert torch.equal(_chat_ids(gguf_tokenizer, question), _chat_ids(tokenizer, question))
    for kind in ("bos", "eos", "pad", "unk"):
        assert getattr(gguf_tokenizer, f"{kind}_token_id") == getattr(tokenizer, f"{kind}_token_id"), kind

    gaps = _logit_gaps(reference, model, tokenizer)
    same_rounding = _logit_gaps(_rounded(reference, lambda m: m.astype("float16").astype("float32")), model, tokenizer)
    print("f16 (max |logit diff|, max |logit|) vs float32 merged:", gaps, "vs f16-rounded merged:", same_rounding)
    for diff, scale in gaps:
        assert diff <= F16_TOLERANCE * max(1.0, scale)
    assert max(diff for diff, _ in same_rounding) <= SAME_ROUNDING_TOLERANCE


def test_q8_0_gguf_is_quantized_and_close(merged_dir, merged_model, gguf_dir):
    from gguf import GGMLQuantizationType, GGUFReader
    from transformers import AutoTokenizer

    types = {t.name: t.tensor_type for t in GGUFReader(gguf_dir / "model-q8_0.gguf").tensors}
    assert types["blk.0.attn_q.weight"] == GGMLQuantizationType.Q8_0 and types["token_embd.weight"] == GGMLQuantizationType.Q8_0
    assert types["blk.0.attn_norm.weight"] == GGMLQuantizationType.F32
    weights = {q: sum(t.n_bytes for t in GGUFReader(gguf_dir / f"model-{q}.gguf").tensors) for q in ("f16", "q8_0")}
    assert weights["q8_0"] < 0.6 * weights["f16"]  # 34 bytes per 32 weights against 64

    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    model, _ = _load_gguf(gguf_dir, "model-q8_0.gguf")
    gaps = _logit_gaps(merged_model, model, tokenizer)
    same_rounding = _logit_gaps(_rounded(merged_model, _q8_0_round), model, tokenizer)
    print("q8_0 (max |logit diff|, max |logit|) vs float32 merged:", gaps, "vs q8_0-rounded merged:", same_rounding)
    for diff, scale in gaps:
        assert diff <= Q8_0_TOLERANCE * max(1.0, scale)
    assert max(diff for diff, _ in same_rounding) <= SAME_ROUNDING_TOLERANCE


def test_f16_gguf_has_llama_cpps_names_types_and_metadata(gguf_dir):
    from gguf import GGMLQuantizationType, GGUFReader

    reader = GGUFReader(gguf_dir / "model-f16.gguf")
    tensors = {t.name: t for t in reader.tensors}
    per_block = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down", "attn_norm", "ffn_norm"]
    expected = {"token_embd.weight", "output_norm.weight"} | {f"blk.{b}.{n}.weight" for b in range(2) for n in per_block}
    assert set(tensors) == expected  # no output.weight: the tiny model ties it to token_embd
    assert tensors["blk.0.attn_q.weight"].tensor_type == GGMLQuantizationType.F16
    assert tensors["output_norm.weight"].tensor_type == GGMLQuantizationType.F32
    assert list(tensors["blk.0.attn_k.weight"].shape) == [64, 32]  # ggml order: (in, out); 2 kv heads of 16

    def field(key):
        value = reader.fields[key]
        return value.contents() if hasattr(value, "contents") else value.parts[value.data[0]]

    assert field("general.architecture") == "llama" and field("general.name") == "model-f16"
    assert field("llama.block_count") == 2 and field("llama.attention.head_count_kv") == 2
    assert field("llama.rope.dimension_count") == 16 and field("llama.context_length") == 2048
    assert field("tokenizer.ggml.model") == "gpt2" and field("tokenizer.ggml.pre") == "gpt-2"
    assert field("tokenizer.ggml.eos_token_id") == 2 and field("tokenizer.ggml.add_bos_token") is False


def test_modelfile_beside_the_gguf_is_chatml_with_the_default_system_and_stop(gguf_dir, merged_dir):
    from transformers import AutoTokenizer

    text = (gguf_dir / "Modelfile").read_text()
    assert "FROM ./model-q8_0.gguf" in text  # the last export in the directory wrote it
    assert f'TEMPLATE """{CHATML_TEMPLATE}"""' in text
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM, trained by Hugging Face"""' in text
    assert 'PARAMETER stop "<|im_end|>"' in text

    # A template that is not ChatML gets no TEMPLATE (Ollama would render it wrong), and the Modelfile says so.
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    assert chatml_system(tokenizer) == (True, "You are a helpful AI assistant named SmolLM, trained by Hugging Face")
    tokenizer.chat_template = "{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}"
    assert chatml_system(tokenizer) == (False, None)


def test_only_f16_and_q8_0_and_only_for_gguf(adapter_dir, tmp_path, capsys):  # noqa: F811
    with pytest.raises(ExportError, match=r"'q4_0'; supported: f16, q8_0"):
        export_command(str(adapter_dir), kind="gguf", output=tmp_path / "m.gguf", quant="q4_0")
    with pytest.raises(ExportError, match="--quant is for GGUF"):
        export_command(str(adapter_dir), kind="merged", output=tmp_path / "m", quant="q8_0")
    assert main([str(adapter_dir), "--format", "gguf", "--quant", "q2_k", "-o", str(tmp_path / "x.gguf")]) == 1
    assert "supported: f16, q8_0" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_refuses_models_it_would_write_wrong(merged_dir):
    config = json.loads((merged_dir / "config.json").read_text())
    assert llama_hparams(config)["head_count_kv"] == 2
    with pytest.raises(GGUFError, match="Llama models"):
        llama_hparams({**config, "model_type": "qwen2"})
    with pytest.raises(GGUFError, match="rope scaling"):
        llama_hparams({**config, "rope_parameters": {"rope_type": "llama3", "factor": 8.0, "rope_theta": 5e5}})
    with pytest.raises(GGUFError, match="biases"):
        llama_hparams({**config, "attention_bias": True})
    tokenizer_json = json.loads((merged_dir / "tokenizer.json").read_text())
    assert pre_tokenizer_name(tokenizer_json) == "gpt-2"
    digits = {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, {"type": "ByteLevel"}]}
    assert pre_tokenizer_name({"pre_tokenizer": digits}) == "smollm"
    with pytest.raises(GGUFError, match="pre-tokenizer"):
        pre_tokenizer_name({"pre_tokenizer": {"type": "Metaspace"}})


def test_export_command_writes_into_a_directory_or_a_tarball(adapter_dir, tmp_path):  # noqa: F811
    import tarfile

    written = export_command(str(adapter_dir), kind="gguf", output=tmp_path)
    name = f"{adapter_dir.parent.name}-f16"
    assert written == tmp_path / f"{name}.gguf" and written.read_bytes()[:4] == b"GGUF"
    assert f"FROM ./{name}.gguf" in (tmp_path / "Modelfile").read_text()
    packed = export_command(str(adapter_dir), kind="gguf", output=tmp_path / "packed" / "m.tar.gz", quant="q8_0")
    with tarfile.open(packed) as tar:
        assert sorted(tar.getnames()) == ["m/Modelfile", "m/m.gguf"]
    assert sorted(p.name for p in packed.parent.iterdir() if not p.name.endswith(".lock")) == ["m.tar.gz"]  # no work dir left
