"""The in-process inference engine: chat and text completion on base models and their adapters.

Owns: loading each base model once (float32 on CPU, bfloat16 on CUDA), prompt building (chat
template, with `tools`, or raw prompt), checking a request in the caller's thread (unknown
model, bad adapter dir, context length: they raise before a stream starts), and handing it to
the batcher, whose worker thread generates all concurrent requests together; streaming of
`Delta`s, then one `Generation`; cancelling a row when its consumer leaves.
Does not own: model references (models/), the adapter LRU (adapters.py), batching and the
decode loop (batcher.py), token choice and logprobs (logits.py), JSON mode (json_mode.py), text
and stop strings (sampling.py), HTTP and OpenAI shapes (api/).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from pathlib import Path

from tuneserve.errors import InvalidRequest
from tuneserve.inference.adapters import AdapterCache, LoadedBase, adapter_tokenizer, check_adapter_dir
from tuneserve.inference.batcher import Batcher, EngineClosed, Request
from tuneserve.inference.logits import Vocab
from tuneserve.inference.sampling import Delta, Generation, SamplingParams, TokenLogprob, TopLogprob
from tuneserve.models import resolve_model as _default_resolve

__all__ = [
    "ContextLengthExceeded",
    "Delta",
    "Engine",
    "EngineClosed",
    "Generation",
    "SamplingParams",
    "TokenLogprob",
    "TopLogprob",
]

DEFAULT_MAX_TOKENS = 512
_FALLBACK_CONTEXT = 2048  # for configs that name no max_position_embeddings


class ContextLengthExceeded(InvalidRequest, ValueError):
    """The prompt, or the prompt plus max_tokens, does not fit in the model's context."""

    default_code = "context_length_exceeded"
    default_param = "messages"


class Engine:
    def __init__(
        self,
        resolve_model=_default_resolve,
        max_adapters: int = 8,
        adapter_budget_bytes: int = 512 * 2**20,
        max_batch_size: int = 16,
        batch_window_s: float = 0.005,
        default_max_tokens: int = DEFAULT_MAX_TOKENS,
    ):
        self._resolve = resolve_model
        self._default_max_tokens = default_max_tokens  # an answer's length when the request names none
        self._adapters = AdapterCache(max_adapters, adapter_budget_bytes)
        self._batcher = Batcher(self._adapters, max_batch_size=max_batch_size, window_s=batch_window_s)
        self._bases: dict[Path, LoadedBase] = {}
        self._paths: dict[str, Path] = {}  # reference -> resolved dir, so a hub id is resolved once
        self._adapter_tokenizers: dict[Path, object] = {}
        self._vocabs: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()  # loading base models and tokenizers (never the worker's models)
        self._closed = False

    # ---- the contract the routes call -------------------------------------------------------

    def chat(
        self,
        base_model: str,
        adapter_dir: Path | None,
        messages: list[dict],
        params: SamplingParams,
        *,
        tools: list[dict] | None = None,
    ) -> Generation:
        return _last(self.stream_chat(base_model, adapter_dir, messages, params, tools=tools))

    def complete(self, base_model: str, adapter_dir: Path | None, prompt: str, params: SamplingParams) -> Generation:
        return _last(self.stream_complete(base_model, adapter_dir, prompt, params))

    def stream_chat(self, base_model, adapter_dir, messages, params, *, tools=None) -> Iterator[Delta | Generation]:
        """Deltas, then exactly one Generation. Errors in the request raise here, not mid-stream."""
        return self._stream(base_model, adapter_dir, params, lambda tok: _chat_ids(tok, messages, tools))

    def stream_complete(self, base_model, adapter_dir, prompt, params) -> Iterator[Delta | Generation]:
        return self._stream(base_model, adapter_dir, params, lambda tok: _completion_ids(tok, prompt))

    def loaded(self) -> dict:
        with self._lock:
            # Base models by the references callers used; adapters by their resolved directories.
            bases = sorted(ref for ref, path in self._paths.items() if path in self._bases)
        return {"base_models": bases, "adapters": self._adapters.paths(), "adapter_bytes": self._adapters.total_bytes()}

    def activity(self) -> dict[str, int]:
        """Rows generating now and requests waiting for a place: a client that left must hold neither."""
        return {"running": self._batcher.active_rows(), "waiting": self._batcher.waiting_requests()}

    def unload_adapter(self, adapter_dir) -> None:
        """Stop serving an adapter: unloaded now, or when the rows that use it finish."""
        path = Path(adapter_dir).expanduser().resolve()
        with self._lock:
            self._adapter_tokenizers.pop(path, None)
        if not self._closed:
            self._batcher.call(lambda: self._batcher.unload(path))

    def close(self) -> None:
        self._closed = True
        self._batcher.close()
        with self._lock:
            self._adapters.clear()
            self._bases.clear()
            self._paths.clear()
            self._adapter_tokenizers.clear()

    # ---- preparing a request (caller's thread) ------------------------------------------------

    def _stream(self, base_model, adapter_dir, params: SamplingParams, encode) -> Iterator[Delta | Generation]:
        request = self._prepare(base_model, adapter_dir, params, encode)
        self._batcher.submit(request)
        return _results(request)

    def _prepare(self, base_model, adapter_dir, params: SamplingParams, encode) -> Request:
        if self._closed:
            raise EngineClosed("the inference engine is closed")
        base = self._base(base_model)
        path = check_adapter_dir(adapter_dir) if adapter_dir is not None else None
        adapter_tokenizer = self._adapter_tokenizer(path) if path is not None else None
        # The adapter dir's tokenizer when it has a chat template (training saved it), else the base's.
        tokenizer = adapter_tokenizer if adapter_tokenizer is not None and adapter_tokenizer.chat_template else base.tokenizer
        prompt_ids = list(encode(tokenizer))
        max_new = _max_new_tokens(params, len(prompt_ids), base.context_length, self._default_max_tokens)
        if path is not None and self._adapters.lookup(base, path) is None:
            # Load now (on the worker, between two steps), so a broken adapter fails this call.
            self._batcher.call(lambda: self._adapters.get(base, path, self._batcher.in_use(), tokenizer=adapter_tokenizer))
        eos = set(base.eos_ids)
        if tokenizer.eos_token_id is not None:
            eos.add(tokenizer.eos_token_id)
        return Request(
            base=base,
            adapter_path=path,
            adapter_tokenizer=adapter_tokenizer,
            tokenizer=tokenizer,
            vocab=self._vocab(tokenizer),
            prompt_ids=prompt_ids,
            max_new=max_new,
            params=params,
            eos_ids=frozenset(eos),
        )

    def _base(self, base_model: str) -> LoadedBase:
        with self._lock:
            path = self._paths.get(base_model)
            if path is None:
                local = Path(base_model)
                # An adapter that cannot share a batch with LoRA adapters (IA3) is served merged, as a model of its own.
                is_adapter = local.is_absolute() and (local / "adapter_config.json").is_file()
                path = local.resolve() if is_adapter else Path(self._resolve(base_model)).resolve()
            base = self._bases.get(path)
            if base is None:
                base = self._bases[path] = _load_base(path)
            self._paths[base_model] = path
            return base

    def _adapter_tokenizer(self, path: Path):
        with self._lock:
            if path not in self._adapter_tokenizers:
                self._adapter_tokenizers[path] = adapter_tokenizer(path)
            return self._adapter_tokenizers[path]

    def _vocab(self, tokenizer) -> Vocab:
        with self._lock:
            vocab = self._vocabs.get(tokenizer)
            if vocab is None:
                vocab = self._vocabs[tokenizer] = Vocab(tokenizer)
            return vocab


class _Results:
    """The iterator a stream_* call returns: Deltas, then one Generation.

    Closing it (a client disconnect) or dropping it, even before the first item, cancels the
    row: it stops at the next decode step and its place in the batch is freed.
    """

    def __init__(self, request: Request):
        self._request = request
        self._done = False

    def __iter__(self):
        return self

    def __next__(self) -> Delta | Generation:
        if self._done:
            raise StopIteration
        item = self._request.out.get()
        if isinstance(item, BaseException):
            self.close()
            raise item
        if isinstance(item, Generation):
            self._done = True
            self._request.cancel.set()
        return item

    def close(self) -> None:
        self._done = True
        self._request.cancel.set()

    def __del__(self):
        self._request.cancel.set()


def _results(request: Request) -> Iterator[Delta | Generation]:
    return _Results(request)


# ---- loading and prompt helpers ------------------------------------------------------------


def _load_base(path: Path) -> LoadedBase:
    import torch

    from tuneserve.models import load_tokenizer
    from tuneserve.models.hf_imports import transformers_names

    (AutoModelForCausalLM,) = transformers_names("AutoModelForCausalLM")

    cuda = torch.cuda.is_available()
    dtype = torch.bfloat16 if cuda else torch.float32
    if (path / "adapter_config.json").is_file():  # merge the adapter into its base: one plain model
        from peft import PeftConfig, PeftModel

        base_dir = _default_resolve(PeftConfig.from_pretrained(path).base_model_name_or_path)
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype), path).merge_and_unload()
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    model.to("cuda" if cuda else "cpu").eval()
    tokenizer = load_tokenizer(path)
    context = getattr(model.config, "max_position_embeddings", None)
    if not context:
        limit = tokenizer.model_max_length
        context = limit if limit and limit < 10**7 else _FALLBACK_CONTEXT  # "no limit" is 1e30 there
    return LoadedBase(
        path=path, model=model, tokenizer=tokenizer, context_length=int(context), eos_ids=tuple(_eos_ids(tokenizer, model))
    )


def _chat_ids(tokenizer, messages: list[dict], tools: list[dict] | None = None) -> list[int]:
    if not tokenizer.chat_template:
        raise ValueError("this model has no chat template; use the completions endpoint")
    extra = {"tools": tools} if tools else {}
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, **extra)
    # The template writes the special tokens itself; adding them again would double the BOS.
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _completion_ids(tokenizer, prompt: str) -> list[int]:
    """The prompt's ids. An empty prompt (OpenAI accepts "") starts from the beginning-of-text token, as
    OpenAI's models start from <|endoftext|>: the model needs one token to attend to (none was a 500)."""
    ids = tokenizer(prompt)["input_ids"]
    if ids:
        return ids
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if start is None:
        raise InvalidRequest("the prompt is empty and this model has no beginning-of-text token to start from", param="prompt")
    return [start]


def _max_new_tokens(params: SamplingParams, prompt_tokens: int, context: int, default: int = DEFAULT_MAX_TOKENS) -> int:
    left = context - prompt_tokens
    if left < 1:
        raise ContextLengthExceeded(f"the prompt has {prompt_tokens} tokens; this model's context is {context}")
    if params.max_tokens is None:
        return min(default, left)
    if params.max_tokens < 1:
        raise ValueError("max_tokens must be at least 1")
    if params.max_tokens > left:
        raise ContextLengthExceeded(
            f"this model's context is {context} tokens; the prompt has {prompt_tokens} and max_tokens asks "
            f"for {params.max_tokens} more"
        )
    return params.max_tokens


def _eos_ids(tokenizer, model) -> list[int]:
    """The tokenizer's EOS and the generation_config's (which may list several, e.g. <|eot_id|>)."""
    ids = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for token in configured if isinstance(configured, list) else [configured]:
        if token is not None and token not in ids:
            ids.append(token)
    return ids


def _last(stream: Iterator[Delta | Generation]) -> Generation:
    for item in stream:
        if isinstance(item, Generation):
            return item
    raise RuntimeError("generation ended without a result")
