"""The in-process inference engine: chat and text completion on base models and their adapters.

Owns: loading each base model once (float32 on CPU, bfloat16 on CUDA), switching adapters,
prompt building (chat template or raw prompt), generation on a worker thread, streaming with
stop strings and cancellation, and token usage.
Does not own: model references (models/), the adapter LRU (adapters.py), sampling parameters
and detokenization (sampling.py), HTTP and OpenAI shapes (api/), batching (a later issue).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path

from tuneserve.inference.adapters import AdapterCache, LoadedAdapter, LoadedBase
from tuneserve.inference.sampling import Generation, SamplingParams, TextStream, generation_config
from tuneserve.models import resolve_model as _default_resolve

__all__ = ["ContextLengthExceeded", "Engine", "Generation", "SamplingParams"]

DEFAULT_MAX_TOKENS = 512
_FALLBACK_CONTEXT = 2048  # for configs that name no max_position_embeddings


class ContextLengthExceeded(ValueError):
    """The prompt, or the prompt plus max_tokens, does not fit in the model's context."""


class _Cancelled:
    """A stopping criterion: end generate() at the next token once the stream is done or closed."""

    def __init__(self, stream: TextStream, out: queue.Queue, cancel: threading.Event):
        self._stream, self._out, self._cancel = stream, out, cancel

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        # Detokenize here rather than after generate(): a stop string then ends generation at the
        # very token that completes it, so completion_tokens does not depend on thread timing.
        delta = self._stream.add(int(input_ids[0, -1]))
        if delta:
            self._out.put(delta)
        done = self._stream.stopped or self._cancel.is_set()
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


class Engine:
    def __init__(self, resolve_model=_default_resolve, max_adapters: int = 8):
        self._resolve = resolve_model
        self._adapters = AdapterCache(max_adapters)
        self._bases: dict[Path, LoadedBase] = {}
        self._paths: dict[str, Path] = {}  # reference -> resolved dir, so a hub id is resolved once
        # One lock for all model use: loading, adapter switching and generate() each change shared
        # module state (active adapter, PEFT layers), and the routes call us from a threadpool.
        self._lock = threading.Lock()
        self._closed = False

    # ---- the contract the routes call -------------------------------------------------------

    def chat(self, base_model: str, adapter_dir: Path | None, messages: list[dict], params: SamplingParams) -> Generation:
        return _last(self.stream_chat(base_model, adapter_dir, messages, params))

    def complete(self, base_model: str, adapter_dir: Path | None, prompt: str, params: SamplingParams) -> Generation:
        return _last(self.stream_complete(base_model, adapter_dir, prompt, params))

    def stream_chat(self, base_model, adapter_dir, messages, params) -> Iterator[str | Generation]:
        """Text deltas, then exactly one Generation. Errors in the request raise here, not mid-stream."""
        return self._stream(base_model, adapter_dir, params, lambda tok: _chat_ids(tok, messages))

    def stream_complete(self, base_model, adapter_dir, prompt, params) -> Iterator[str | Generation]:
        return self._stream(base_model, adapter_dir, params, lambda tok: tok(prompt)["input_ids"])

    def loaded(self) -> dict:
        with self._lock:
            # Base models by the references callers used; adapters by their resolved directories.
            bases = sorted(ref for ref, path in self._paths.items() if path in self._bases)
            return {"base_models": bases, "adapters": self._adapters.paths()}

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._adapters.clear()
            self._bases.clear()
            self._paths.clear()

    # ---- preparing a request ----------------------------------------------------------------

    def _stream(self, base_model, adapter_dir, params: SamplingParams, encode) -> Iterator[str | Generation]:
        # Load and tokenize now, in the caller's thread, so a bad model, adapter or prompt length
        # raises before a streaming response has started. The worker re-checks the adapter under
        # the lock, because another request may evict it in between.
        with self._lock:
            base, adapter = self._load(base_model, adapter_dir)
            tokenizer = _tokenizer(base, adapter)
            prompt_ids = list(encode(tokenizer))
            max_new = _max_new_tokens(params, len(prompt_ids), base.context_length)
        return self._generate(base_model, adapter_dir, tokenizer, prompt_ids, max_new, params)

    def _load(self, base_model: str, adapter_dir: Path | None) -> tuple[LoadedBase, LoadedAdapter | None]:
        if self._closed:
            raise RuntimeError("the inference engine is closed")
        path = self._paths.get(base_model)
        if path is None:
            path = self._paths[base_model] = Path(self._resolve(base_model)).resolve()
        base = self._bases.get(path)
        if base is None:
            base = self._bases[path] = _load_base(path)
        adapter = self._adapters.get(base, adapter_dir) if adapter_dir is not None else None
        return base, adapter

    # ---- generating -------------------------------------------------------------------------

    def _generate(self, base_model, adapter_dir, tokenizer, prompt_ids, max_new, params) -> Iterator[str | Generation]:
        out: queue.Queue = queue.Queue()  # unbounded: the worker never blocks on a slow consumer
        cancel = threading.Event()
        args = (base_model, adapter_dir, tokenizer, prompt_ids, max_new, params, out, cancel)
        worker = threading.Thread(target=self._work, args=args, name="tuneserve-generate", daemon=True)
        worker.start()
        try:
            while True:
                item = out.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if isinstance(item, Generation):
                    return
        finally:
            # Runs when the consumer closes the iterator (client disconnect) or drops it: the
            # stopping criterion sees the flag at the next token and generate() returns.
            cancel.set()

    def _work(self, base_model, adapter_dir, tokenizer, prompt_ids, max_new, params, out, cancel) -> None:
        try:
            out.put(self._run(base_model, adapter_dir, tokenizer, prompt_ids, max_new, params, out, cancel))
        except BaseException as exc:  # handed to the consumer, which re-raises it in its thread
            out.put(exc)

    def _run(self, base_model, adapter_dir, tokenizer, prompt_ids, max_new, params, out, cancel) -> Generation:
        import torch
        from transformers import StoppingCriteriaList

        stream = TextStream(tokenizer, params.stop)
        with self._lock:
            if cancel.is_set():  # the consumer left while we waited for the lock
                return Generation("", "length", len(prompt_ids), 0)
            base, adapter = self._load(base_model, adapter_dir)
            model = base.model
            eos_ids = _eos_ids(tokenizer, model)
            config = generation_config(params, max_new, eos_ids, tokenizer.pad_token_id)
            device = next(model.parameters()).device
            input_ids = torch.tensor([prompt_ids], device=device)
            if adapter is not None:
                model.set_adapter(adapter.name)
                adapters_off = nullcontext()
            elif _is_peft(model):
                # A base that carries adapters must not use them for a base-model request.
                adapters_off = model.disable_adapter()
            else:
                adapters_off = nullcontext()
            # Seeding the global RNG is safe under the lock; fork_rng restores it afterwards so a
            # seeded request does not make the next unseeded one predictable.
            devices = [device.index or 0] if device.type == "cuda" else []
            rng = torch.random.fork_rng(devices=devices, enabled=params.seed is not None)
            with rng, torch.inference_mode(), adapters_off:
                if params.seed is not None:
                    torch.manual_seed(params.seed)
                output = model.generate(
                    input_ids=input_ids,
                    attention_mask=torch.ones_like(input_ids),
                    generation_config=config,
                    stopping_criteria=StoppingCriteriaList([_Cancelled(stream, out, cancel)]),
                )
        completion = output[0, len(prompt_ids) :].tolist()
        tail = stream.finish()
        if tail:
            out.put(tail)
        stopped = stream.stopped or (bool(completion) and completion[-1] in eos_ids)
        return Generation(stream.text, "stop" if stopped else "length", len(prompt_ids), len(completion))


# ---- loading and prompt helpers ------------------------------------------------------------


def _load_base(path: Path) -> LoadedBase:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cuda = torch.cuda.is_available()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16 if cuda else torch.float32)
    model.to("cuda" if cuda else "cpu").eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    context = getattr(model.config, "max_position_embeddings", None)
    if not context:
        limit = tokenizer.model_max_length
        context = limit if limit and limit < 10**7 else _FALLBACK_CONTEXT  # "no limit" is 1e30 there
    return LoadedBase(path=path, model=model, tokenizer=tokenizer, context_length=int(context))


def _is_peft(model) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def _tokenizer(base: LoadedBase, adapter: LoadedAdapter | None):
    """The adapter dir's tokenizer when it has a chat template (training saved it), else the base's."""
    if adapter is not None and adapter.tokenizer is not None and adapter.tokenizer.chat_template:
        return adapter.tokenizer
    return base.tokenizer


def _chat_ids(tokenizer, messages: list[dict]) -> list[int]:
    if not tokenizer.chat_template:
        raise ValueError("this model has no chat template; use the completions endpoint")
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    # The template writes the special tokens itself; adding them again would double the BOS.
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _max_new_tokens(params: SamplingParams, prompt_tokens: int, context: int) -> int:
    left = context - prompt_tokens
    if left < 1:
        raise ContextLengthExceeded(f"the prompt has {prompt_tokens} tokens; this model's context is {context}")
    if params.max_tokens is None:
        return min(DEFAULT_MAX_TOKENS, left)
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


def _last(stream: Iterator[str | Generation]) -> Generation:
    for item in stream:
        if isinstance(item, Generation):
            return item
    raise RuntimeError("generation ended without a result")
