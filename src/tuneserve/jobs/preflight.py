"""Preflight: refuse, when a job is created, an adapter that the upstream vLLM server would reject.

Owns: the rules vLLM applies when it loads a PEFT LoRA adapter (vllm/config/lora.py,
vllm/lora/peft_helper.py, vllm/lora/models.py), checked here against a LoraSpec (before training)
or an adapter directory's adapter_config.json (before registering it):
- the rank must be at most the server's `--max-lora-rank` (vLLM's default is 16);
- no DoRA (`use_dora`), no `modules_to_save` (vLLM refuses both);
- every target module must be one vLLM can put a LoRA on for the architecture; the embeddings,
  the LM head and vision-tower modules are refused.
Does not own: talking to the server (inference/upstream.py), nor the job itself (jobs/service.py).
Never imports torch: the base model's architecture comes from its config.json, read as JSON.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Mapping

from tuneserve.errors import InvalidRequest, NotFound

CODE = "adapter_rejected_by_upstream"

_ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
_MLP = ("gate_proj", "up_proj", "down_proj")

# Module names (the last part of a PEFT target, as vLLM matches them) that vLLM applies LoRA to, per
# `model_type` of config.json. vLLM fuses q/k/v into qkv_proj and gate/up into gate_up_proj inside the
# engine and accepts the unfused names of a PEFT adapter (its packed_modules_mapping); Phi-3 is fused in
# transformers too, so its adapters name qkv_proj / gate_up_proj. Mixtral's experts (w1/w2/w3) need
# FusedMoE LoRA (vLLM >= 0.11.2), so only its attention is listed. lm_head and embed_tokens are left out
# on purpose: recent vLLM refuses them, older ones need lora_extra_vocab_size.
LORA_MODULES: dict[str, frozenset[str]] = {
    "llama": frozenset(_ATTENTION + _MLP),
    "mistral": frozenset(_ATTENTION + _MLP),
    "qwen2": frozenset(_ATTENTION + _MLP),
    "qwen3": frozenset(_ATTENTION + _MLP),
    "gemma": frozenset(_ATTENTION + _MLP),
    "gemma2": frozenset(_ATTENTION + _MLP),
    "phi3": frozenset(("qkv_proj", "o_proj", "gate_up_proj", "down_proj")),
    "mixtral": frozenset(_ATTENTION),
}

# Never LoRA-able in vLLM, whatever the architecture.
_REFUSED = ("lm_head", "embed_tokens", "wte", "word_embeddings", "embed_in", "embed_out")
_VISION = re.compile(r"vision|visual|image_encoder|mm_projector|multi_modal_projector")

# Built-in references whose architecture is known before they are built or downloaded.
_BUILTIN_TYPES = {"tuneserve/tiny-random": "llama", "HuggingFaceTB/SmolLM2-135M-Instruct": "llama"}


def _refuse(message: str, param: str) -> None:
    raise InvalidRequest(f"vLLM would reject this adapter: {message}", param=param, code=CODE)


def check_adapter_for_vllm(
    lora: Any,
    *,
    model_type: str | None,
    max_lora_rank: int,
    use_dora: bool = False,
    modules_to_save: list | None = None,
    param_prefix: str = "lora.",
) -> None:
    """Raise InvalidRequest (code adapter_rejected_by_upstream) if vLLM would refuse this LoRA shape.

    `lora` is a LoraSpec or a dict with `r` and `target_modules` ("all-linear", a list, or a PEFT regex
    string). `model_type` is config.json's; None (unknown) checks everything but the per-architecture list.
    """
    get = lora.get if isinstance(lora, Mapping) else lambda key, default=None: getattr(lora, key, default)
    r = get("r", 16)
    if r is not None and int(r) > max_lora_rank:
        _refuse(
            f"LoRA rank {r} is greater than the server's max_lora_rank {max_lora_rank} "
            f"(lower lora.r, or start vLLM with --max-lora-rank {_next_vllm_rank(int(r))})",
            f"{param_prefix}r",
        )
    if use_dora:
        _refuse("DoRA (use_dora) is not supported by vLLM; train a plain LoRA", f"{param_prefix}use_dora")
    if modules_to_save:
        _refuse(
            f"modules_to_save ({', '.join(map(str, modules_to_save))}) is not supported by vLLM: "
            "it serves LoRA deltas only, not fully trained modules",
            f"{param_prefix}modules_to_save",
        )
    _check_targets(get("target_modules", "all-linear"), model_type, f"{param_prefix}target_modules")


def _check_targets(targets: Any, model_type: str | None, param: str) -> None:
    if targets is None or targets == "all-linear":
        return  # PEFT's all-linear excludes the output layer: every module it picks is LoRA-able in vLLM
    if isinstance(targets, str):  # a PEFT regex over full module names: refuse what it visibly reaches
        try:
            pattern = re.compile(targets)
        except re.error as exc:
            raise InvalidRequest(
                f"target_modules {targets!r} is not a valid regular expression: {exc}",
                param=param,
                code="invalid_hyperparameters",
            ) from None
        for name in _REFUSED:
            if pattern.search(f"model.{name}"):
                _refuse(f"target_modules {targets!r} matches {name}, which vLLM cannot apply LoRA to", param)
        if _VISION.search(targets):
            _refuse(f"target_modules {targets!r} reaches vision-tower modules, which vLLM cannot load", param)
        return
    names = [str(t) for t in targets]
    leaves = {name: name.rsplit(".", 1)[-1] for name in names}
    refused = [n for n, leaf in leaves.items() if leaf in _REFUSED]
    if refused:
        _refuse(
            f"target_modules {refused} cannot carry a LoRA in vLLM (embeddings and the LM head are not "
            "LoRA-able there; leave them out or use all-linear)",
            param,
        )
    vision = [n for n in names if _VISION.search(n)]
    if vision:
        _refuse(f"target_modules {vision} are vision-tower modules, which vLLM cannot load in an adapter", param)
    allowed = LORA_MODULES.get(model_type or "")
    if allowed is not None:
        unknown = sorted({n for n, leaf in leaves.items() if leaf not in allowed})
        if unknown:
            _refuse(
                f"target_modules {unknown} are not LoRA-able in vLLM for {model_type} models "
                f"(expected some of {sorted(allowed)}, or all-linear)",
                param,
            )


def _next_vllm_rank(r: int) -> int:
    """The smallest value vLLM accepts for --max-lora-rank that fits rank r."""
    for allowed in (8, 16, 32, 64, 128, 256, 320, 512):
        if r <= allowed:
            return allowed
    return r


def model_type_of(ref: str) -> str | None:
    """config.json's model_type for a model reference, from disk only (no torch, no network); None if unknown."""
    if ref in _BUILTIN_TYPES:
        return _BUILTIN_TYPES[ref]
    from tuneserve.models import cache_dir

    candidates = [Path(ref).expanduser() / "config.json", cache_dir() / ref.replace("/", "--") / "config.json"]
    if ref.count("/") == 1 and not ref.startswith((".", "/", "~")):
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(ref, "config.json")
            if isinstance(cached, str):
                candidates.append(Path(cached))
        except Exception:  # no huggingface_hub, or a malformed id: the type stays unknown
            pass
    for path in candidates:
        try:
            return json.loads(path.read_text()).get("model_type")
        except (OSError, ValueError, AttributeError):
            continue
    return None


def read_adapter_config(adapter_dir: str | os.PathLike, param: str = "lora_path") -> dict:
    """adapter_config.json of a PEFT adapter directory: NotFound (404) where there is no adapter, InvalidRequest
    (400) where its config cannot be read."""
    path = Path(adapter_dir) / "adapter_config.json"
    if not Path(adapter_dir).is_dir():
        raise NotFound(f"No adapter directory at {adapter_dir}", param=param, code="adapter_not_found")
    try:
        config = json.loads(path.read_text())
    except OSError:
        raise NotFound(
            f"No adapter_config.json in {adapter_dir}: not a PEFT adapter directory", param=param, code="adapter_not_found"
        ) from None
    except ValueError as exc:
        raise InvalidRequest(f"{path} is not valid JSON: {exc}", param=param, code="invalid_adapter") from None
    if not isinstance(config, dict):
        raise InvalidRequest(f"{path} does not hold a JSON object", param=param, code="invalid_adapter")
    return config


def check_adapter_dir_for_vllm(adapter_dir: str | os.PathLike, max_lora_rank: int, *, model_type: str | None = None) -> None:
    """Check a trained adapter directory before it is registered with vLLM (the same rules, read from its
    adapter_config.json; the architecture from its base model when not given)."""
    config = read_adapter_config(adapter_dir)
    if str(config.get("peft_type", "LORA")).upper() != "LORA":
        _refuse(f"vLLM serves LoRA adapters only, not {config.get('peft_type')}", "peft_type")
    if not any((Path(adapter_dir) / f).is_file() for f in ("adapter_model.safetensors", "adapter_model.bin")):
        raise InvalidRequest(
            f"No adapter weights (adapter_model.safetensors) in {adapter_dir}", param="lora_path", code="adapter_not_found"
        )
    if model_type is None and config.get("base_model_name_or_path"):
        model_type = model_type_of(str(config["base_model_name_or_path"]))
    check_adapter_for_vllm(
        config,
        model_type=model_type,
        max_lora_rank=max_lora_rank,
        use_dora=bool(config.get("use_dora")),
        modules_to_save=config.get("modules_to_save"),
        param_prefix="",
    )


def check_spec_for_vllm(spec: Any, max_lora_rank: int) -> None:
    """The job-creation preflight for a TrainingSpec: a new adapter is checked from spec.lora; a job that
    continues from an adapter (spec.init_adapter) keeps that adapter's shape, so that one is checked."""
    if spec.init_adapter:
        config = read_adapter_config(spec.init_adapter, param="model")
        check_adapter_for_vllm(
            config,
            model_type=model_type_of(spec.model),
            max_lora_rank=max_lora_rank,
            use_dora=bool(config.get("use_dora")),
            modules_to_save=config.get("modules_to_save"),
        )
        return
    lora = spec.lora  # use_dora / modules_to_save are read too, for when LoraSpec grows them
    check_adapter_for_vllm(
        lora,
        model_type=model_type_of(spec.model),
        max_lora_rank=max_lora_rank,
        use_dora=bool(getattr(lora, "use_dora", False)),
        modules_to_save=getattr(lora, "modules_to_save", None),
    )
