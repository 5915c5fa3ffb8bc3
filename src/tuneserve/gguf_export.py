"""Write a transformers Llama model directory as one GGUF file (llama.cpp, Ollama, LM Studio), and its Ollama Modelfile.

Owns: `write_gguf` (config.json, safetensors and tokenizer in; one .gguf out, f16 or q8_0), `check_quant` and
`QUANTS`, and `ollama_modelfile` (FROM, the chat template as Ollama's Go TEMPLATE where it is ChatML, stop tokens).
Does not own: merging an adapter (export.py does that first), reading GGUF (transformers, models/resolve.py).

What llama.cpp's own converter (convert_hf_to_gguf.py, LlamaModel) writes, done with the pinned `gguf` package:
tensor names from gguf's own HF->GGUF map, the hyperparameters llama.cpp's Llama reads, q_proj/k_proj rows
permuted for llama.cpp's rotary layout (transformers' GGUF loader undoes it on read), norms kept in float32, and a
"gpt2" (byte-level BPE) tokenizer with the pre-tokenizer named after what the tokenizer really does, so llama.cpp
cuts text into the same tokens tuneserve trained on. Anything else (another architecture, a sentencepiece vocabulary,
rope scaling, biases) is refused with a GGUFError rather than written wrong (export.py reports it as an ExportError;
this module does not import export.py, which imports it).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tuneserve.atomic import disk_full_is_insufficient_storage

QUANTS = ("f16", "q8_0")
MODELFILE = "Modelfile"


class GGUFError(Exception):
    """The model (or the quantization asked for) cannot be written as GGUF: the message says why, for a person."""


# The pre-tokenizer (tokenizer.json) -> llama.cpp's name for the same split rules (llama-vocab.cpp). Matched by
# structure rather than by llama.cpp's hash of sample text: tuneserve's SmolLM2 tokenizer, rebuilt by transformers
# from the packaged GGUF, splits as plain GPT-2 does (no single-digit split), so its honest name is "gpt-2".
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def check_quant(quant: str) -> str:
    if quant not in QUANTS:
        raise GGUFError(
            f"unsupported GGUF quantization {quant!r}; supported: {', '.join(QUANTS)} "
            "(for smaller types, run llama.cpp's llama-quantize on the f16 file)"
        )
    return quant


# ---- hyperparameters ----------------------------------------------------------------------------


def llama_hparams(config: dict) -> dict:
    """The numbers llama.cpp's Llama reads, from a transformers config.json; refuses what it would get wrong."""
    if config.get("model_type") != "llama":
        raise GGUFError(f"GGUF export supports Llama models (SmolLM2 and the like); this one is {config.get('model_type')!r}")
    rope = config.get("rope_parameters") or {}
    rope_type = rope.get("rope_type") or (config.get("rope_scaling") or {}).get("rope_type") or "default"
    if rope_type != "default" or config.get("rope_scaling"):
        raise GGUFError(f"GGUF export does not write rope scaling ({rope_type!r}) yet")
    if config.get("attention_bias") or config.get("mlp_bias"):
        raise GGUFError("GGUF export does not write attention or MLP biases yet")
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    return {
        "context_length": config["max_position_embeddings"],
        "embedding_length": config["hidden_size"],
        "block_count": config["num_hidden_layers"],
        "feed_forward_length": config["intermediate_size"],
        "head_count": heads,
        "head_count_kv": config.get("num_key_value_heads") or heads,
        "head_dim": head_dim,
        "rope_freq_base": float(rope.get("rope_theta") or config.get("rope_theta") or 10000.0),
        "rms_eps": float(config["rms_norm_eps"]),
        "vocab_size": config["vocab_size"],
        "tied": bool(config.get("tie_word_embeddings", False)),
    }


def _write_hparams(writer, hp: dict, file_type: int) -> None:
    writer.add_context_length(hp["context_length"])
    writer.add_embedding_length(hp["embedding_length"])
    writer.add_block_count(hp["block_count"])
    writer.add_feed_forward_length(hp["feed_forward_length"])
    writer.add_head_count(hp["head_count"])
    writer.add_head_count_kv(hp["head_count_kv"])
    writer.add_rope_freq_base(hp["rope_freq_base"])
    writer.add_layer_norm_rms_eps(hp["rms_eps"])
    writer.add_vocab_size(hp["vocab_size"])
    writer.add_rope_dimension_count(hp["head_dim"])
    if hp["head_dim"] != hp["embedding_length"] // hp["head_count"]:
        writer.add_key_length(hp["head_dim"])
        writer.add_value_length(hp["head_dim"])
    writer.add_file_type(file_type)


# ---- tensors --------------------------------------------------------------------------------------


def rotary_permute(weights, n_head: int):
    """llama.cpp's LlamaModel.permute: interleave each head's two rotary halves (q with all heads, k with the kv heads)."""
    return weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def _hf_tensors(model_dir: Path) -> Iterator[tuple[str, object]]:
    """(name, float32 numpy array) for every tensor of the directory's safetensors files, one file open at a time."""
    from safetensors import safe_open

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise GGUFError(f"no safetensors weights in {model_dir}")
    for path in files:
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():
                yield name, handle.get_tensor(name).float().numpy()


def _gguf_tensors(model_dir: Path, hp: dict) -> Iterator[tuple[str, object]]:
    """The model's tensors under their GGUF names, q/k permuted; the tied output (lm_head) left out."""
    import gguf

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, hp["block_count"])
    for name, data in _hf_tensors(model_dir):
        if "rotary_emb" in name or (hp["tied"] and name == "lm_head.weight"):
            continue  # computed, not stored; or the same matrix as token_embd
        new_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if new_name is None:
            raise GGUFError(f"no GGUF name for the tensor {name!r}")
        if name.endswith("q_proj.weight"):
            data = rotary_permute(data, hp["head_count"])
        elif name.endswith("k_proj.weight"):
            data = rotary_permute(data, hp["head_count_kv"])
        yield new_name, data


def encode_tensor(gguf, name: str, data, quant: str):
    """(data, type): norms and other 1-D tensors in float32 (llama.cpp expects it); matrices in f16 or q8_0.
    A matrix whose rows do not split into q8_0's blocks of 32 stays f16, as llama.cpp's converter does."""
    types = gguf.GGMLQuantizationType
    if data.ndim <= 1 or name.endswith("_norm.weight"):
        return data.astype("float32"), types.F32
    if quant == "q8_0":
        try:
            return gguf.quants.quantize(data, types.Q8_0), types.Q8_0
        except gguf.QuantError:
            pass
    return data.astype("float16"), types.F16


# ---- tokenizer ------------------------------------------------------------------------------------


def pre_tokenizer_name(tokenizer_json: dict) -> str:
    """llama.cpp's name for the tokenizer's pre-tokenizer; a GGUFError for one llama.cpp would split differently."""
    pre = tokenizer_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [step.get("type") for step in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and steps[1].get("use_regex", True):
        return "smollm"
    if kinds == ["Split", "ByteLevel"] and (steps[0].get("pattern") or {}).get("Regex") == _LLAMA3_SPLIT:
        return "llama-bpe"
    raise GGUFError(f"GGUF export does not know llama.cpp's name for this pre-tokenizer ({kinds}); not exported")


def _token_table(tokenizer, vocab_size: int) -> tuple[list[str], list[int]]:
    """Every id's token and type, as llama.cpp's converter lists them: added special tokens CONTROL, other added
    tokens USER_DEFINED, ids the tokenizer does not use '[PADn]' UNUSED (when the embedding has spare rows)."""
    import gguf

    reverse = {index: token for token, index in tokenizer.get_vocab().items()}
    if max(reverse) >= vocab_size:
        raise GGUFError(f"the tokenizer has ids up to {max(reverse)} but the model only {vocab_size} embeddings")
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for index in range(vocab_size):
        if index not in reverse:
            tokens.append(f"[PAD{index}]")
            types.append(gguf.TokenType.UNUSED)
        elif index in added:
            tokens.append(reverse[index])
            types.append(gguf.TokenType.CONTROL if added[index].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(reverse[index])
            types.append(gguf.TokenType.NORMAL)
    return tokens, types


def _write_tokenizer(writer, model_dir: Path, vocab_size: int) -> None:
    import gguf

    from tuneserve.models import load_tokenizer

    tokenizer_file = model_dir / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise GGUFError(f"GGUF export needs a fast tokenizer (tokenizer.json) in {model_dir}")
    tokenizer_json = json.loads(tokenizer_file.read_text())
    if (tokenizer_json.get("model") or {}).get("type") != "BPE" or "ByteLevel" not in json.dumps(tokenizer_json.get("decoder")):
        raise GGUFError("GGUF export writes byte-level BPE tokenizers (gpt2); this one is not (a sentencepiece vocabulary?)")
    tokenizer = load_tokenizer(model_dir)
    tokens, types = _token_table(tokenizer, vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer_name(tokenizer_json))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    merges = gguf.SpecialVocab(model_dir, load_merges=True, special_token_types=()).merges
    if not merges:
        raise GGUFError(f"no BPE merges in {tokenizer_file}")
    writer.add_token_merges(merges)
    for kind in ("bos", "eos", "unk", "pad"):
        token_id = getattr(tokenizer, f"{kind}_token_id", None)
        if token_id is not None:
            getattr(writer, f"add_{kind}_token_id")(token_id)
    # What the tokenizer adds to plain text, so llama.cpp adds the same (the chat template writes its own markers).
    probe = tokenizer("a")["input_ids"]
    writer.add_add_bos_token(tokenizer.bos_token_id is not None and probe[0] == tokenizer.bos_token_id)
    writer.add_add_eos_token(tokenizer.eos_token_id is not None and probe[-1] == tokenizer.eos_token_id)
    writer.add_add_space_prefix(False)
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)


# ---- the file ---------------------------------------------------------------------------------------


def write_gguf_file(out: Path, fill: Callable[[Any], None]) -> Path:
    """One Llama-architecture GGUF file at `out`: `fill(writer)` adds its metadata and tensors to a gguf.GGUFWriter.

    Written under a temporary name and renamed into place; a full disk is errors.InsufficientStorage.
    """
    import gguf

    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    with disk_full_is_insufficient_storage(f"writing {out}"):
        out.parent.mkdir(parents=True, exist_ok=True)
        writer = gguf.GGUFWriter(tmp, "llama")
        try:
            fill(writer)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
            writer.close()
            os.replace(tmp, out)
        except BaseException:
            writer.close()
            tmp.unlink(missing_ok=True)
            raise
    return out


def add_tensors(writer, tensors: Iterator[tuple[str, Any]], quant: str) -> int:
    """Add (name, float32 array) tensors in `quant`'s encoding (encode_tensor); how many there were."""
    import gguf

    count = 0
    for tensor_name, data in tensors:
        encoded, qtype = encode_tensor(gguf, tensor_name, data, quant)
        writer.add_tensor(tensor_name, encoded, raw_dtype=qtype)
        count += 1
    return count


def write_gguf(model_dir: Path, out: Path, *, quant: str = "f16", name: str | None = None) -> Path:
    """Write the Llama model in `model_dir` (config.json, safetensors, tokenizer) as the single GGUF file `out`."""
    import gguf

    check_quant(quant)
    model_dir, out = Path(model_dir), Path(out)
    config = json.loads((model_dir / "config.json").read_text())
    hp = llama_hparams(config)
    file_type = gguf.LlamaFileType.MOSTLY_F16 if quant == "f16" else gguf.LlamaFileType.MOSTLY_Q8_0

    def fill(writer) -> None:
        writer.add_type(gguf.GGUFType.MODEL)
        writer.add_name(name or model_dir.name)
        _write_hparams(writer, hp, file_type)
        _write_tokenizer(writer, model_dir, hp["vocab_size"])
        if quant != "f16":
            writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        add_tensors(writer, _gguf_tensors(model_dir, hp), quant)

    return write_gguf_file(out, fill)


# ---- Ollama -----------------------------------------------------------------------------------------

# Ollama's Go template for ChatML: every message (a system one included) as <|im_start|>ROLE\n...<|im_end|>\n, then
# the assistant's turn opened, as the Jinja template renders with add_generation_prompt.
CHATML_TEMPLATE = """{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
"""


def _chatml(messages: list[dict], default_system: str | None) -> str:
    """What CHATML_TEMPLATE renders in Ollama, which puts the Modelfile's SYSTEM first when no message is a system one."""
    if default_system is not None and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": default_system}, *messages]
    turns = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return turns + "<|im_start|>assistant\n"


def chatml_system(tokenizer) -> tuple[bool, str | None]:
    """(whether the chat template renders as CHATML_TEMPLATE does, the system prompt it adds when none is given).

    Judged by rendering: the template must give exactly what the Go template gives on a few conversations.
    """
    if not tokenizer.chat_template or "<|im_start|>" not in tokenizer.chat_template:
        return False, None

    def render(messages):
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    default_system = None
    alone = render([{"role": "user", "content": "Hi"}])
    head = "<|im_start|>system\n"
    if alone.startswith(head) and "<|im_end|>\n" in alone:
        default_system = alone[len(head) : alone.index("<|im_end|>\n")]
    probes = [
        [{"role": "user", "content": "Hi"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"}],
    ]
    try:
        same = all(render(m) == _chatml(m, default_system) for m in probes)
    except Exception:  # a template that refuses a probe (roles it does not know) is not simple ChatML
        same = False
    return same, default_system if same else None


def _quoted(text: str) -> str:
    if '"""' in text:
        raise GGUFError('the text has """ in it, which an Ollama Modelfile cannot quote')
    return f'"""{text}"""'


def ollama_modelfile(model_dir: Path, gguf_name: str) -> str:
    """An Ollama Modelfile for the GGUF `gguf_name` beside it: FROM, TEMPLATE (ChatML only), SYSTEM, stop tokens."""
    from tuneserve.models import load_tokenizer

    model_dir = Path(model_dir)
    tokenizer = load_tokenizer(model_dir)
    lines = [
        f"# Ollama: ollama create NAME -f {MODELFILE}   (written by tuneserve export)",
        f"FROM ./{gguf_name}",
    ]
    is_chatml, system = chatml_system(tokenizer)
    if is_chatml:
        lines.append(f"TEMPLATE {_quoted(CHATML_TEMPLATE)}")
        if system:
            lines.append(f"SYSTEM {_quoted(system)}")
    else:
        lines.append(
            "# No TEMPLATE: the chat template is not plain ChatML, and tuneserve does not translate other Jinja templates"
            " to Go. Ollama falls back to the GGUF's tokenizer.chat_template where it recognises it; otherwise add one."
        )
    for token in _stop_tokens(model_dir, tokenizer):
        lines.append(f"PARAMETER stop {json.dumps(token)}")
    return "\n".join(lines) + "\n"


def _stop_tokens(model_dir: Path, tokenizer) -> list[str]:
    """The end-of-turn tokens serving stops on: generation_config's eos ids and the tokenizer's eos, in that order."""
    ids: list[int] = []
    generation = model_dir / "generation_config.json"
    if generation.is_file():
        eos = json.loads(generation.read_text()).get("eos_token_id")
        ids.extend(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    tokens = [tokenizer.convert_ids_to_tokens(i) for i in dict.fromkeys(ids)]
    return [t for t in tokens if t]
