"""LoRA GGUF export (`tuneserve export --format gguf-lora`): the file says what llama.cpp's loader checks, and its
matrices applied as llama.cpp applies them (W + alpha/r . B A, on the base's GGUF layout) give the merged model's GGUF
weights. Whether llama.cpp itself answers with it is tests/api/test_gguf_download.py's (when llama-cpp-python is there)."""

from __future__ import annotations

import json
import math
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TINY
from tests.unit.test_export import adapter_dir  # noqa: F401  (the fixture: a LoRA adapter with non-zero weights)
from tuneserve.export import ExportError, export_command, export_merged
from tuneserve.gguf_export import GGUFError, _gguf_tensors, llama_hparams
from tuneserve.gguf_lora import lora_alpha

PER_BLOCK = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"]


def _read(path: Path) -> tuple[dict, dict]:
    """(fields, {tensor name: float32 array in numpy's (rows, columns) order}) of a GGUF file."""
    from gguf import GGUFReader

    reader = GGUFReader(path)
    fields = {}
    for key, value in reader.fields.items():
        fields[key] = value.contents() if hasattr(value, "contents") else value.parts[value.data[0]]
    return fields, {t.name: np.asarray(t.data, dtype=np.float32).reshape(list(reversed(t.shape))) for t in reader.tensors}


@pytest.fixture(scope="module")
def lora_gguf(adapter_dir, tmp_path_factory) -> Path:  # noqa: F811
    out = tmp_path_factory.mktemp("lora")
    written = export_command(str(adapter_dir), kind="gguf-lora", output=out)
    assert written == out / f"{adapter_dir.parent.name}-lora-f16.gguf"
    return written


def test_lora_gguf_has_what_llama_cpps_adapter_loader_checks(lora_gguf):
    fields, tensors = _read(lora_gguf)
    assert fields["general.type"] == "adapter" and fields["adapter.type"] == "lora"
    assert fields["general.architecture"] == "llama"  # llama.cpp refuses an adapter of another architecture
    assert fields["adapter.lora.alpha"] == 16.0
    assert set(tensors) == {f"blk.{b}.{n}.weight.lora_{ab}" for b in range(2) for n in PER_BLOCK for ab in "ab"}
    # PEFT's orientation, the one llama.cpp's loader accepts: a (r x in), b (out x r); the tiny model has 2 kv heads of 16.
    assert tensors["blk.0.attn_k.weight.lora_a"].shape == (8, 64)
    assert tensors["blk.0.attn_k.weight.lora_b"].shape == (32, 8)
    assert not any(name.startswith(("token_embd", "output")) for name in tensors)  # no base weights in an adapter


def test_base_plus_lora_as_llama_cpp_applies_it_is_the_merged_gguf(adapter_dir, lora_gguf, tmp_path):  # noqa: F811
    """llama.cpp computes W x + alpha/r . B (A x) with the base's GGUF W (q/k rows permuted for its rotary layout).
    The sum must be the merged model's GGUF weight, matrix for matrix: wrong names, orientation, permutation or scale
    would be off by the size of the LoRA update itself."""
    from tuneserve.models import resolve_model

    fields, lora = _read(lora_gguf)
    base_dir = resolve_model(TINY)
    merged_dir = export_merged(adapter_dir, TINY, tmp_path / "merged", dtype="float32")
    hp = llama_hparams(json.loads((base_dir / "config.json").read_text()))
    base, merged = dict(_gguf_tensors(base_dir, hp)), dict(_gguf_tensors(merged_dir, hp))
    scale = fields["adapter.lora.alpha"] / 8  # alpha / r
    checked = 0
    for name, weight in base.items():
        if f"{name}.lora_a" not in lora:
            assert np.array_equal(merged[name], weight)  # norms and embeddings: the adapter leaves them alone
            continue
        update = scale * lora[f"{name}.lora_b"] @ lora[f"{name}.lora_a"]
        assert np.abs(update).max() > 0.1  # a real update, far above the tolerance below
        # f16 keeps about 3 significant digits of each LoRA matrix.
        np.testing.assert_allclose(weight + update, merged[name], atol=2e-3 * np.abs(update).max())
        checked += 1
    assert checked == 2 * len(PER_BLOCK)


def _with_config(adapter: Path, tmp_path: Path, **changes) -> Path:
    copy = tmp_path / "edited"
    shutil.copytree(adapter, copy)
    config = json.loads((copy / "adapter_config.json").read_text())
    (copy / "adapter_config.json").write_text(json.dumps({**config, **changes}))
    return copy


def test_rslora_is_written_as_the_alpha_that_gives_its_scale(adapter_dir, tmp_path):  # noqa: F811
    edited = _with_config(adapter_dir, tmp_path, use_rslora=True)
    written = export_command(str(edited), kind="gguf-lora", output=tmp_path / "rs.gguf")
    alpha = _read(written)[0]["adapter.lora.alpha"]
    assert alpha / 8 == pytest.approx(16 / math.sqrt(8))  # llama.cpp's alpha / r is PEFT's rsLoRA alpha / sqrt(r)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"peft_type": "IA3"}, "LoRA adapters only, not IA3"),
        ({"use_dora": True}, "DoRA"),
        ({"modules_to_save": ["lm_head"]}, "whole modules"),
        ({"rank_pattern": {"q_proj": 4}}, "one alpha per adapter"),
    ],
)
def test_adapters_llama_cpp_cannot_apply_are_refused_with_the_way_out(adapter_dir, tmp_path, changes, message):  # noqa: F811
    edited = _with_config(adapter_dir, tmp_path, **changes)
    with pytest.raises(ExportError, match=message) as refused:
        export_command(str(edited), kind="gguf-lora", output=tmp_path / "x.gguf")
    assert "--format gguf" in str(refused.value)
    assert not (tmp_path / "x.gguf").exists() and not list(tmp_path.glob(".x.gguf*"))
    with pytest.raises(GGUFError, match=message):
        lora_alpha({"peft_type": "LORA", "r": 8, "lora_alpha": 16, **changes})


def test_gguf_lora_into_a_tarball_and_its_quant(adapter_dir, tmp_path):  # noqa: F811
    packed = export_command(str(adapter_dir), kind="gguf-lora", output=tmp_path / "a.tar.gz", quant="q8_0")
    with tarfile.open(packed) as tar:
        assert tar.getnames() == ["a/a.gguf"]  # no Modelfile: the adapter runs beside a base GGUF
        tar.extractall(tmp_path / "out", filter="data")
    from gguf import GGMLQuantizationType, GGUFReader

    types = {t.name: t.tensor_type for t in GGUFReader(tmp_path / "out" / "a" / "a.gguf").tensors}
    assert types["blk.0.attn_q.weight.lora_a"] == GGMLQuantizationType.Q8_0  # rows of 64: blocks of 32
    assert types["blk.0.attn_q.weight.lora_b"] == GGMLQuantizationType.F16  # rows of r=8 do not split into 32s
