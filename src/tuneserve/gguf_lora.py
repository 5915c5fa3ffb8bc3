"""Write a PEFT LoRA adapter as a llama.cpp LoRA GGUF, for `llama-server -m BASE.gguf --lora ADAPTER.gguf`.

Owns: `write_lora_gguf` (adapter_config.json and adapter_model.safetensors in, one small .gguf out).
Does not own: the base model's GGUF (gguf_export.write_gguf; llama.cpp's own converter writes the same tensor names
and rotary layout, so a base GGUF from either fits), merging (export.py), serving (inference/llamacpp.py).

What llama.cpp's convert_lora_to_gguf.py writes, done with the pinned `gguf` package:
- general.type "adapter", adapter.type "lora", adapter.lora.alpha, and the base's architecture;
- for each adapted weight, `{its GGUF name}.lora_a` (r x in) and `.lora_b` (out x r), in PEFT's own orientation,
  which is the one llama.cpp checks for;
- q_proj/k_proj: the rows of lora_b permuted as the base's q/k rows are (W + s.B.A permutes row-wise through B).
llama.cpp scales by alpha / r at run time (times `--lora-scaled`). rsLoRA's alpha / sqrt(r) is written as the
alpha that gives the same scale. What llama.cpp cannot apply (IA3, DoRA, LoRA on embeddings, modules_to_save,
per-module ranks or alphas) is refused with a GGUFError that points to the merged GGUF instead.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

from tuneserve.gguf_export import GGUFError, add_tensors, check_quant, llama_hparams, rotary_permute, write_gguf_file

MERGED_INSTEAD = "export the merged model as GGUF instead (--format gguf)"


def lora_alpha(adapter_config: dict) -> float:
    """The alpha llama.cpp needs (its scale is alpha / r) for the adapter's PEFT scale; refuses what it cannot apply."""
    if adapter_config.get("peft_type") != "LORA":
        raise GGUFError(f"llama.cpp applies LoRA adapters only, not {adapter_config.get('peft_type')}; {MERGED_INSTEAD}")
    if adapter_config.get("use_dora"):
        raise GGUFError(f"llama.cpp cannot apply DoRA's magnitude vectors; {MERGED_INSTEAD}")
    if adapter_config.get("modules_to_save"):
        raise GGUFError(f"the adapter trains whole modules ({adapter_config['modules_to_save']}); {MERGED_INSTEAD}")
    if adapter_config.get("rank_pattern") or adapter_config.get("alpha_pattern"):
        raise GGUFError(f"llama.cpp has one alpha per adapter, and this one varies by module; {MERGED_INSTEAD}")
    r, alpha = adapter_config["r"], float(adapter_config["lora_alpha"])
    return alpha * math.sqrt(r) if adapter_config.get("use_rslora") else alpha


def _lora_tensors(adapter_dir: Path, hp: dict) -> Iterator[tuple[str, object]]:
    """(GGUF name + .lora_a/.lora_b, float32 numpy array) for every LoRA matrix of the adapter, q/k lora_b permuted."""
    import gguf
    from safetensors import safe_open

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, hp["block_count"])
    path = adapter_dir / "adapter_model.safetensors"
    if not path.is_file():
        raise GGUFError(f"no adapter weights (adapter_model.safetensors) in {adapter_dir}")
    with safe_open(str(path), framework="pt") as handle:
        for key in sorted(handle.keys()):
            module, _, kind = key.removeprefix("base_model.model.").rpartition(".lora_")
            if kind not in ("A.weight", "B.weight"):
                raise GGUFError(f"the adapter tensor {key!r} is not a LoRA matrix llama.cpp can apply; {MERGED_INSTEAD}")
            base_name = names.get_name(f"{module}.weight", try_suffixes=(".weight",))
            if base_name is None or "token_embd" in base_name:
                raise GGUFError(f"llama.cpp has no LoRA for {module!r}; {MERGED_INSTEAD}")
            data = handle.get_tensor(key).float().numpy()
            if kind == "B.weight" and module.endswith("q_proj"):
                data = rotary_permute(data, hp["head_count"])
            elif kind == "B.weight" and module.endswith("k_proj"):
                data = rotary_permute(data, hp["head_count_kv"])
            yield f"{base_name}.lora_{kind[0].lower()}", data


def write_lora_gguf(adapter_dir: Path, base_config: dict, out: Path, *, quant: str = "f16", name: str | None = None) -> Path:
    """Write the LoRA adapter in `adapter_dir`, trained on the Llama model whose config.json is `base_config`, as
    llama.cpp's LoRA GGUF `out` (under a temporary name, renamed into place)."""
    import gguf

    check_quant(quant)
    adapter_dir, out = Path(adapter_dir), Path(out)
    config_file = adapter_dir / "adapter_config.json"
    if not config_file.is_file():
        raise GGUFError(f"{adapter_dir} holds no adapter (a full fine-tune has no LoRA to write); {MERGED_INSTEAD}")
    alpha = lora_alpha(json.loads(config_file.read_text()))
    hp = llama_hparams(base_config)

    def fill(writer) -> None:
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
        writer.add_name(name or out.stem)
        if not add_tensors(writer, _lora_tensors(adapter_dir, hp), quant):
            raise GGUFError(f"the adapter in {adapter_dir} has no LoRA matrices")

    return write_gguf_file(out, fill)
