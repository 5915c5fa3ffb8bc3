"""Dynamic (continuous) batching: one worker thread generates every request of a base model together.

Owns: the worker thread that owns the models while it runs, the request queue, forming batches
(FIFO, one base model at a time, up to `max_batch_size` rows), left-padded prefill, the decode
loop over a shared transformers DynamicCache, requests joining a running batch at the next step
(their prefill cache is left-padded and concatenated to the batch's), finished or cancelled rows
leaving it (cache rows dropped, all-padding columns trimmed), rows of different adapters in one
forward pass (PEFT's `adapter_names=[...]`, "__base__" for base rows), per-row stop conditions,
and running adapter loads and unloads between steps (`call`), so no thread ever changes a model
while a forward pass runs.
Does not own: choosing tokens (logits.py), text and stop strings (sampling.TextStream),
the adapter LRU (adapters.py), prompt building and request checks (engine.py).

Faithfulness: every row gets the position ids and attention mask it would have alone (positions
count its own tokens, padding is masked), so a greedy row gives the same text in any batch, up to
floating-point ties.
"""

from __future__ import annotations

import queue
import atexit
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneserve.inference.adapters import AdapterCache, LoadedBase, adapter_name
from tuneserve.inference.json_mode import JsonPrefix
from tuneserve.inference.logits import Vocab, apply_penalties, choose
from tuneserve.inference.sampling import Delta, Generation, SamplingParams, TextStream, TokenLogprob

BASE_ROW = "__base__"  # PEFT's name for "no adapter" in a mixed-adapter batch


class EngineClosed(RuntimeError):
    pass


@dataclass(eq=False)
class Request:
    base: LoadedBase
    adapter_path: Path | None
    adapter_tokenizer: Any  # the adapter dir's tokenizer (or None), so a reload does not read it again
    tokenizer: Any  # the one that built the prompt; it decodes the output
    vocab: Vocab
    prompt_ids: list[int]
    max_new: int
    params: SamplingParams
    eos_ids: frozenset[int]
    out: queue.Queue = field(default_factory=queue.Queue)  # Delta | Generation | BaseException
    cancel: threading.Event = field(default_factory=threading.Event)


@dataclass(eq=False)
class _Row:
    req: Request
    adapter: str  # PEFT adapter name or BASE_ROW
    stream: TextStream
    generator: Any
    position: int  # the position id of the next token fed to the model
    json_state: JsonPrefix | None
    generated: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    pending: list[TokenLogprob] = field(default_factory=list)  # logprobs not yet sent in a Delta

    @property
    def simple_greedy(self) -> bool:
        p = self.req.params
        return p.greedy and not p.logprobs and self.json_state is None and p.presence_penalty == 0 and p.frequency_penalty == 0


@dataclass(eq=False)
class _Batch:
    base: LoadedBase
    rows: list[_Row]
    cache: Any  # DynamicCache, batch-major in the order of `rows`
    mask: Any  # (B, L) attention mask, left padded
    logits: Any  # (B, V) next-token logits of each row

    @property
    def joinable(self) -> bool:
        from transformers.cache_utils import DynamicLayer

        return all(type(layer) is DynamicLayer for layer in self.cache.layers)


@dataclass(eq=False)
class _Call:
    fn: Callable[[], Any]
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None


_LIVE: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    # A worker still blocked in the queue at interpreter exit makes torch's threads abort noisily.
    for batcher in list(_LIVE):
        batcher.close(timeout=2.0)


class Batcher:
    def __init__(self, adapters: AdapterCache, max_batch_size: int = 16, window_s: float = 0.005):
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self.max_batch_size = max_batch_size
        self.window_s = window_s
        self._adapters = adapters
        self._inbox: queue.Queue = queue.Queue()
        self._waiting: deque[Request] = deque()
        self._batch: _Batch | None = None
        self._pending_unloads: set[Path] = set()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._prefilling = 0  # rows being prefilled: out of the queue, not yet in the batch
        self.steps = 0  # decode steps run (for tests and benchmarks)
        self.max_rows_seen = 0
        _LIVE.add(self)

    # ---- called from other threads ----------------------------------------------------------

    def submit(self, request: Request) -> None:
        if self._closed:
            raise EngineClosed("the inference engine is closed")
        self._ensure_thread()
        self._inbox.put(request)

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the worker thread between two decode steps; return its result or raise its error."""
        if self._closed:
            raise EngineClosed("the inference engine is closed")
        if threading.current_thread() is self._thread:
            return fn()
        self._ensure_thread()
        item = _Call(fn)
        self._inbox.put(item)
        item.done.wait()
        if item.error is not None:
            raise item.error
        return item.result

    def active_rows(self) -> int:
        batch = self._batch
        return (len(batch.rows) if batch is not None else 0) + self._prefilling

    def waiting_requests(self) -> int:
        """Requests submitted and not yet in the batch (read from other threads: a moment's count)."""
        return len(self._waiting) + sum(isinstance(item, Request) for item in list(self._inbox.queue))

    def close(self, timeout: float = 10.0) -> None:
        self._closed = True
        self._inbox.put(None)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    # ---- worker thread ----------------------------------------------------------------------

    def in_use(self) -> set[str]:
        """Adapter names that running or waiting rows need (never evicted)."""
        names = {row.adapter for row in self._batch.rows} if self._batch is not None else set()
        names.update(adapter_name(r.adapter_path) for r in self._waiting if r.adapter_path is not None)
        names.discard(BASE_ROW)
        return names

    def unload(self, path: Path) -> None:
        """Unload an adapter now, or as soon as no running row uses it (worker thread)."""
        if self._adapters.names_for(path) & self.in_use():
            self._pending_unloads.add(path)
        else:
            self._adapters.remove(path)

    def _ensure_thread(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._main, name="tuneserve-batcher", daemon=True)
                self._thread.start()

    def _main(self) -> None:
        import torch

        while True:
            try:
                self._receive(block=self._batch is None and not self._waiting)
                if self._closed:
                    self._fail_all(EngineClosed("the inference engine is closed"))
                    return
                with torch.inference_mode():
                    self._admit()
                    if self._batch is not None:
                        self._step()
                self._run_pending_unloads()
            except BaseException as exc:  # a failed forward pass fails its batch, not the engine
                self._fail_batch(exc)

    def _receive(self, block: bool) -> None:
        if block:
            got_request = self._handle(self._inbox.get())
            if got_request and self.window_s > 0:
                # A short window, so requests sent together start together.
                deadline = time.monotonic() + self.window_s
                while (left := deadline - time.monotonic()) > 0 and not self._closed:
                    try:
                        self._handle(self._inbox.get(timeout=left))
                    except queue.Empty:
                        break
        while not self._closed:
            try:
                self._handle(self._inbox.get_nowait())
            except queue.Empty:
                break

    def _handle(self, item) -> bool:
        if item is None:
            return False
        if isinstance(item, _Call):
            try:
                import torch

                with torch.inference_mode():
                    item.result = item.fn()
            except BaseException as exc:
                item.error = exc
            item.done.set()
            return False
        self._waiting.append(item)
        return True

    def _admit(self) -> None:
        self._drop_cancelled()
        batch = self._batch
        if batch is not None and not batch.joinable:
            return
        room = self.max_batch_size - (len(batch.rows) if batch is not None else 0)
        take: list[Request] = []
        while self._waiting and room > 0:
            request = self._waiting[0]
            base = batch.base if batch is not None else (take[0].base if take else request.base)
            if request.base is not base:
                break  # FIFO: another base model's request waits for this batch to drain
            take.append(self._waiting.popleft())
            room -= 1
        if take:
            self._prefilling = len(take)
            try:
                self._prefill(take)
            finally:
                self._prefilling = 0

    def _drop_cancelled(self) -> None:
        """Answer (empty) the waiting requests whose consumer left, at every step: with the batch full they would
        otherwise wait for a place, then generate for no one, and their consumer's thread wait with them."""
        for request in [r for r in self._waiting if r.cancel.is_set()]:
            self._waiting.remove(request)
            request.out.put(Generation("", "length", len(request.prompt_ids), 0, () if request.params.logprobs else None))

    def _prefill(self, requests: list[Request]) -> None:
        import torch

        from tuneserve.models.hf_imports import transformers_names

        (DynamicCache,) = transformers_names("DynamicCache")

        base = requests[0].base
        rows: list[_Row] = []
        for request in requests:
            try:
                rows.append(self._new_row(request, {r.adapter for r in rows}))
            except Exception as exc:  # an adapter that fails to (re)load fails its own request only
                request.out.put(exc)
        if not rows:
            return
        device = _device(base.model)
        pad = _pad_id(base, rows[0].req.tokenizer)
        length = max(len(r.req.prompt_ids) for r in rows)
        ids = torch.full((len(rows), length), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, row in enumerate(rows):
            prompt = row.req.prompt_ids
            ids[i, length - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            mask[i, length - len(prompt) :] = 1
        ids, mask = ids.to(device), mask.to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()
        try:
            logits = _forward(base, ids, mask, positions, cache, [r.adapter for r in rows])
        except Exception as exc:  # fails these requests; the running batch goes on
            for row in rows:
                row.req.out.put(exc)
            return
        self._merge(base, rows, cache, mask, logits)

    def _new_row(self, request: Request, also_in_use: set[str]) -> _Row:
        import torch

        name = BASE_ROW
        if request.adapter_path is not None:
            adapter = self._adapters.get(
                request.base, request.adapter_path, self.in_use() | also_in_use, tokenizer=request.adapter_tokenizer
            )
            name = adapter.name
        params = request.params
        seed = params.seed if params.seed is not None else random.SystemRandom().randrange(2**63)
        return _Row(
            req=request,
            adapter=name,
            stream=TextStream(request.tokenizer, params.stop),
            generator=torch.Generator(device="cpu").manual_seed(seed),
            position=len(request.prompt_ids),
            json_state=JsonPrefix() if params.json_mode else None,
        )

    def _merge(self, base: LoadedBase, rows: list[_Row], cache, mask, logits) -> None:
        import torch
        import torch.nn.functional as F

        batch = self._batch
        self.max_rows_seen = max(self.max_rows_seen, len(rows) + (len(batch.rows) if batch is not None else 0))
        if batch is None:
            self._batch = _Batch(base, rows, cache, mask, logits)
            return
        old_len, new_len = batch.mask.shape[1], mask.shape[1]
        length = max(old_len, new_len)
        for old_layer, new_layer in zip(batch.cache.layers, cache.layers):
            for attr in ("keys", "values"):
                old, new = getattr(old_layer, attr), getattr(new_layer, attr)
                old = F.pad(old, (0, 0, length - old_len, 0))  # left-pad the sequence dim (-2)
                new = F.pad(new, (0, 0, length - new_len, 0))
                setattr(old_layer, attr, torch.cat([old, new], dim=0))
        batch.mask = torch.cat([F.pad(batch.mask, (length - old_len, 0)), F.pad(mask, (length - new_len, 0))], dim=0)
        batch.logits = torch.cat([batch.logits, logits], dim=0)
        batch.rows.extend(rows)

    def _step(self) -> None:
        import torch

        batch = self._batch
        self.steps += 1
        logits = batch.logits
        greedy = logits.argmax(dim=-1).tolist() if any(r.simple_greedy for r in batch.rows) else None
        keep: list[int] = []
        tokens: list[int] = []
        for i, row in enumerate(batch.rows):
            params = row.req.params
            if row.req.cancel.is_set():
                self._finish(row, "length")
                continue
            entry = None
            if row.simple_greedy:
                token = greedy[i]
            else:
                row_logits = logits[i]
                if params.presence_penalty or params.frequency_penalty:
                    row_logits = row_logits.clone()
                    apply_penalties(row_logits, row.generated, params)
                token, row.json_state, entry = choose(
                    row_logits,
                    params,
                    row.generator,
                    row.json_state,
                    row.req.vocab,
                    tokens_left=row.req.max_new - len(row.generated),
                )
            if self._advance(row, token, entry):
                keep.append(i)
                tokens.append(token)
        if not keep:
            self._batch = None
            return
        if len(keep) < len(batch.rows):
            self._select(batch, keep)
        device = batch.mask.device
        ids = torch.tensor(tokens, dtype=torch.long, device=device)[:, None]
        positions = torch.tensor([row.position for row in batch.rows], dtype=torch.long, device=device)[:, None]
        batch.mask = torch.cat([batch.mask, torch.ones_like(batch.mask[:, :1])], dim=1)
        for row in batch.rows:
            row.position += 1
        batch.logits = _forward(batch.base, ids, batch.mask, positions, batch.cache, [r.adapter for r in batch.rows])

    def _advance(self, row: _Row, token: int, entry: TokenLogprob | None) -> bool:
        """Take a row's new token; send what is safe to send. False when the row is finished."""
        row.generated.append(token)
        request = row.req
        if token in request.eos_ids and row.json_state is None:
            self._finish(row, "stop")
            return False
        delta = row.stream.add(token)
        if entry is not None:
            row.logprobs.append(entry)
            row.pending.append(entry)
        if row.stream.stopped or (row.json_state is not None and row.json_state.complete):
            self._send(row, delta)
            self._finish(row, "stop")
            return False
        if len(row.generated) >= request.max_new:
            self._send(row, delta)
            self._finish(row, "length")
            return False
        if delta:
            self._send(row, delta)
        return True

    def _send(self, row: _Row, text: str) -> None:
        if text or row.pending:
            row.req.out.put(Delta(text, tuple(row.pending)))
            row.pending.clear()

    def _finish(self, row: _Row, reason: str) -> None:
        self._send(row, row.stream.finish())
        request = row.req
        logprobs = tuple(row.logprobs) if request.params.logprobs else None
        request.out.put(Generation(row.stream.text, reason, len(request.prompt_ids), len(row.generated), logprobs))

    def _select(self, batch: _Batch, keep: list[int]) -> None:
        import torch

        index = torch.tensor(keep, dtype=torch.long, device=batch.mask.device)
        mask = batch.mask.index_select(0, index)
        # Drop the columns that are padding for every row left: shorter attention, same result.
        start = int(mask.any(dim=0).long().argmax()) if batch.joinable else 0
        batch.mask = mask[:, start:]
        for layer in batch.cache.layers:
            if getattr(layer, "keys", None) is None or layer.keys.numel() == 0:
                continue
            layer.keys = layer.keys.index_select(0, index)[:, :, start:, :]
            layer.values = layer.values.index_select(0, index)[:, :, start:, :]
        batch.rows = [batch.rows[i] for i in keep]

    def _run_pending_unloads(self) -> None:
        if not self._pending_unloads:
            return
        in_use = self.in_use()
        for path in list(self._pending_unloads):
            if not (self._adapters.names_for(path) & in_use):
                self._adapters.remove(path)
                self._pending_unloads.discard(path)

    def _fail_batch(self, exc: BaseException) -> None:
        batch, self._batch = self._batch, None
        if batch is not None:
            for row in batch.rows:
                row.req.out.put(exc)

    def _fail_all(self, exc: BaseException) -> None:
        self._fail_batch(exc)
        for request in self._waiting:
            request.out.put(exc)
        self._waiting.clear()
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, Request):
                item.out.put(exc)
            elif isinstance(item, _Call):
                item.error = exc
                item.done.set()


def _forward(base: LoadedBase, ids, mask, positions, cache, adapters: list[str]):
    """One forward pass over a batch; the last position's logits, float32 (B, V)."""
    from peft import PeftModel

    kwargs = dict(
        input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True, logits_to_keep=1
    )
    if isinstance(base.model, PeftModel):
        kwargs["adapter_names"] = adapters
    return base.model(**kwargs).logits[:, -1, :].float()


def _device(model):
    return next(model.parameters()).device


def _pad_id(base: LoadedBase, tokenizer) -> int:
    for candidate in (tokenizer.pad_token_id, base.tokenizer.pad_token_id, *base.eos_ids):
        if candidate is not None:
            return int(candidate)
    return 0
