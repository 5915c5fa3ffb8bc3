"""Token statistics of a training set, as the model's own tokenizer and chat template see it.

Owns: `token_report(records, model, ...)`: tokens per example (min, mean, p50, p95, max), the
share of tokens that are trained, what truncation at `max_seq_length` does, estimated training
tokens for n_epochs, and an estimated time from measured throughput (models/throughput.py).
Does not own: reading files or validating records (data/formats.py, data/validation.py), nor the
exact per-token loss mask used in training (data/formatting.py).

How it stays fast and bounded on large files:
  * records are consumed as a stream, `BATCH_SIZE` at a time; a batch is rendered to text with
    the chat template (`tokenize=False`, `tools=` when the record has tools) and tokenized in one
    call to the fast tokenizer's Rust backend (lengths only: no Python lists of ids are built);
  * only per-example counts are kept, in `array('I')` (4 bytes an example and a column), never
    the texts or the ids.

How "trained tokens" are counted (equal to data/formatting.py's mask on identity.json,
alpaca_en_demo.json and glaive_toolcall_en_demo.json with SmolLM2; tested within 1%):
  training labels, for each assistant turn with weight != 0, its content tokens plus the
  template's end-of-turn token(s), and nothing else. Here each trained turn's content is found
  in the rendered text (searching backwards from the end, one turn after another), and the
  tokens covering it are read off the one batched encoding with `char_to_token` (no second
  tokenization); `eot_tokens` is added per turn, measured once per tokenizer on a probe
  conversation with the prefix-render method training uses (1 for SmolLM2's "<|im_end|>").
  When a content is not found verbatim (a template that trims or rewrites it), a trained turn
  has tool calls the template renders, or the tokenizer is not a fast one, that record's trained
  turns are tokenized on their own instead (content, plus tool calls as JSON), which differs
  from the exact mask only by BPE merges at the turn's edges.
  Messages are rendered as training renders them (data.formatting's per-message transform:
  tool-call arguments as objects, calls inlined into the content when the template cannot write
  them), so inlined calls are located like any content.
  TextExample: every token is trained. PreferenceExample: the statistics describe the chosen
  side (prompt + chosen, trained = chosen turn); the rejected side's lengths are reported under
  "rejected", and both sides count in estimated_training_tokens, since DPO runs both.

Truncation: an example longer than max_seq_length keeps its first max_seq_length tokens
(training keeps the head). It "loses all trained tokens", and training would drop it, when its
first trained token starts at or after max_seq_length; that start is measured only for the
over-length examples (from the same encoding; in the fallback, by rendering the conversation up to the
first trained turn with a generation prompt). estimated_training_tokens = n_epochs x the sum
of min(len, max_seq_length) over the examples training keeps: the tokens it will process.
"""

from __future__ import annotations

import json
import threading
from array import array
from collections import OrderedDict
from itertools import islice
from typing import Any, Iterable, Sequence

from tuneserve.data.auto import auto_n_epochs
from tuneserve.data.records import DataError, Example, PreferenceExample, Record, TextExample

# Messages are rendered exactly as training renders them: tool-call arguments as objects, calls
# inlined into the content when the template cannot write them.
from tuneserve.data.formatting import for_template as _template_message
from tuneserve.data.formatting import renders_tool_calls as _renders_tool_calls

BATCH_SIZE = 512
_TOKENIZER_CACHE_SIZE = 4
_tokenizers: "OrderedDict[str, tuple[Any, int]]" = OrderedDict()
_tokenizers_lock = threading.Lock()  # the API may build reports from several threads


def token_report(records: Iterable[Record], model: str, *, max_seq_length: int, n_epochs: int | None) -> dict:
    """Tokenize `records` (streamed, batched) with `model`'s tokenizer and summarise. JSON-able."""
    tokenizer, eot_tokens = load_tokenizer(model)
    counter = _Counter(tokenizer, eot_tokens, max_seq_length)
    iterator = iter(records)
    while batch := list(islice(iterator, BATCH_SIZE)):
        counter.add_batch(batch)
    return counter.report(model, n_epochs)


def load_tokenizer(model: str) -> tuple[Any, int]:
    """The model's tokenizer and its end-of-turn token count, kept in a small LRU per model."""
    with _tokenizers_lock:
        if model in _tokenizers:
            _tokenizers.move_to_end(model)
            return _tokenizers[model]
    from transformers import AutoTokenizer

    from tuneserve.models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(model))
    entry = (tokenizer, _measure_eot_tokens(tokenizer))
    with _tokenizers_lock:
        entry = _tokenizers.setdefault(model, entry)  # another thread may have loaded it meanwhile
        _tokenizers.move_to_end(model)
        while len(_tokenizers) > _TOKENIZER_CACHE_SIZE:
            _tokenizers.popitem(last=False)
    return entry


def _measure_eot_tokens(tokenizer: Any) -> int:
    """Tokens training labels after an assistant turn's content (the end-of-turn token), by probe."""
    content = "The answer is forty-two."
    messages = [{"role": "user", "content": "What is the answer?"}, {"role": "assistant", "content": content}]
    try:
        prompt = tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception:
        return 1
    if not full.startswith(prompt):
        return 1
    turn = full[len(prompt) :].rstrip()  # training trims the whitespace after the end-of-turn token
    n_turn = len(tokenizer(turn, add_special_tokens=False)["input_ids"])
    n_content = len(tokenizer(content, add_special_tokens=False)["input_ids"])
    return max(0, n_turn - n_content)


class _Counter:
    """Per-example counts in compact arrays; the texts of a batch are dropped after counting."""

    def __init__(self, tokenizer: Any, eot_tokens: int, max_seq_length: int):
        if max_seq_length <= 0:
            raise ValueError("max_seq_length must be positive")
        self.tokenizer = tokenizer
        self.eot_tokens = eot_tokens
        self.max_seq_length = max_seq_length
        self.fast = bool(getattr(tokenizer, "is_fast", False)) and getattr(tokenizer, "backend_tokenizer", None) is not None
        self.renders_tool_calls = _renders_tool_calls(tokenizer)
        self.lengths = array("I")  # tokens per example (chosen side for preferences)
        self.trained = array("I")  # trained tokens per example
        self.rejected = array("I")  # tokens of prompt + rejected, preference examples only
        self.over = 0
        self.tokens_cut = 0
        self.dropped = 0  # examples whose trained tokens all fall past max_seq_length (or have none)
        self.kept_tokens = 0  # sum of min(len, max) over kept examples, plus rejected sides
        self.rejected_over = 0

    # -- counting ---------------------------------------------------------------------------
    def add_batch(self, batch: Sequence[Record]) -> None:
        texts: list[str] = []
        spans: list[list[tuple[int, int]] | None] = []  # trained content spans in the text; None = locate failed
        rejected_texts: list[str] = []
        for record in batch:
            if isinstance(record, TextExample):
                texts.append(record.text)
                spans.append([])
            elif isinstance(record, Example):
                messages = self._template_messages(record.messages)
                text = self._render(messages, record.tools, record.line)
                texts.append(text)
                trained = [i for i, m in enumerate(record.messages) if m["role"] == "assistant" and m.get("weight", 1) != 0]
                spans.append(self._locate(text, messages, trained))
            elif isinstance(record, PreferenceExample):
                messages = self._template_messages((*record.prompt, record.chosen))
                text = self._render(messages, record.tools, record.line)
                texts.append(text)
                spans.append(self._locate(text, messages, [len(record.prompt)]))
                rejected = self._template_messages((*record.prompt, record.rejected))
                rejected_texts.append(self._render(rejected, record.tools, record.line))
            else:
                raise TypeError(f"not a record: {type(record).__name__}")

        encodings = self._encode(texts)
        lengths = [len(e) for e in encodings]
        trained: list[int] = []
        first: list[int | None] = []  # token index of the first trained token, when known
        fallback: list[int] = []
        for i, (record, encoding) in enumerate(zip(batch, encodings)):
            if isinstance(record, TextExample):
                trained.append(lengths[i])
                first.append(0)
                continue
            counted = _count_spans(encoding, spans[i])
            if counted is None:
                fallback.append(i)
                trained.append(0)
                first.append(None)
            else:
                n_turns = len(spans[i])
                trained.append(counted[0] + self.eot_tokens * n_turns)
                first.append(counted[1])
        if fallback:  # tokenize each trained turn on its own, batched
            owners: list[int] = []
            turn_texts: list[str] = []
            for i in fallback:
                record = batch[i]
                if isinstance(record, Example):
                    messages = self._template_messages(record.messages)
                    turns = [
                        messages[j] for j, m in enumerate(record.messages) if m["role"] == "assistant" and m.get("weight", 1) != 0
                    ]
                else:
                    turns = [self._template_messages((*record.prompt, record.chosen))[-1]]
                trained[i] = self.eot_tokens * len(turns)
                for message in turns:
                    owners.append(i)
                    turn_texts.append(_trained_text(message, self.renders_tool_calls))
            for i, encoding in zip(owners, self._encode(turn_texts)):
                trained[i] += len(encoding)

        limit = self.max_seq_length
        kept: list[bool] = []
        for i, (record, length, n_trained) in enumerate(zip(batch, lengths, trained)):
            self.lengths.append(length)
            self.trained.append(min(n_trained, length))
            keep = n_trained > 0 and length >= 2  # training drops what has nothing to predict
            if length > limit:
                self.over += 1
                self.tokens_cut += length - limit
                if keep:
                    start = first[i] if first[i] is not None else self._first_trained_position(record)
                    keep = start < limit
            kept.append(keep)
            if keep:
                self.kept_tokens += min(length, limit)
            else:
                self.dropped += 1
        pref = [i for i, r in enumerate(batch) if isinstance(r, PreferenceExample)]
        for i, encoding in zip(pref, self._encode(rejected_texts)):
            length = len(encoding)
            self.rejected.append(length)
            if length > limit:
                self.rejected_over += 1
            if kept[i]:
                self.kept_tokens += min(length, limit)

    def _locate(self, text: str, messages: Sequence[dict[str, Any]], trained: list[int]) -> list[tuple[int, int]] | None:
        """Character spans of the trained turns' contents in the rendered text, or None when unsure.

        Searched from the end backwards (each content must end before the next one starts), so
        the template's own text before the conversation cannot be mistaken for a turn. None when
        a content is not found verbatim (a template that trims or rewrites it) or a trained turn
        carries tool calls the template renders: the caller then tokenizes those turns alone.
        """
        if not self.fast:
            return None
        wanted = set(trained)
        found: list[tuple[int, int]] = []
        end = len(text)
        for i in range(len(messages) - 1, -1, -1):
            message = messages[i]
            content = message.get("content")
            if not isinstance(content, str):
                if i in wanted:
                    return None
                continue
            if i in wanted and self.renders_tool_calls and message.get("tool_calls"):
                return None
            if not content:
                if i in wanted:
                    found.append((end, end))
                continue
            start = text.rfind(content, 0, end)
            if start < 0:
                return None
            if i in wanted:
                found.append((start, start + len(content)))
            end = start
        found.reverse()
        return found

    def _encode(self, texts: list[str]) -> list[Any]:
        """Encodings of texts in one batched call (len() = tokens); no special tokens added, since the
        template writes its own. Fast tokenizers give Rust encodings with char_to_token; others, id lists."""
        if not texts:
            return []
        if self.fast:
            return self.tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False)
        return self.tokenizer(texts, add_special_tokens=False, return_attention_mask=False, verbose=False)["input_ids"]

    def _template_messages(self, messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        inline_calls = not self.renders_tool_calls and any(m.get("tool_calls") for m in messages)
        return [_template_message(m, inline_calls) for m in messages]

    def _render(
        self, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]], line: int, generation_prompt: bool = False
    ) -> str:
        if not messages:
            return ""
        try:
            return self.tokenizer.apply_chat_template(
                list(messages), tools=list(tools) or None, tokenize=False, add_generation_prompt=generation_prompt
            )
        except Exception as exc:  # a template that rejects the conversation (roles, tool shapes)
            raise DataError(
                f"the model's chat template cannot render this conversation: {exc}", line=line, code="template_error"
            ) from exc

    def _first_trained_position(self, record: Example | PreferenceExample) -> int:
        """Token index where the first trained turn's content starts (its prompt rendered with a generation prompt)."""
        if isinstance(record, PreferenceExample):
            before = record.prompt
        else:
            first = next(i for i, m in enumerate(record.messages) if m["role"] == "assistant" and m.get("weight", 1) != 0)
            before = record.messages[:first]
        before = self._template_messages(before)
        return len(self._encode([self._render(before, record.tools, record.line, generation_prompt=True)])[0])

    # -- summary ----------------------------------------------------------------------------
    def report(self, model: str, n_epochs: int | None) -> dict:
        import numpy as np

        from tuneserve.models.throughput import measured_throughput

        n = len(self.lengths)
        lengths = np.frombuffer(self.lengths, dtype=np.uint32) if n else np.zeros(0, dtype=np.uint32)
        total = int(lengths.sum(dtype=np.int64))
        trained = int(np.frombuffer(self.trained, dtype=np.uint32).sum(dtype=np.int64)) if n else 0
        epochs = int(n_epochs) if n_epochs is not None else auto_n_epochs(n)
        estimated = epochs * self.kept_tokens
        device = _device()
        throughput = measured_throughput(model, device)
        report = {
            "model": model,
            "max_seq_length": self.max_seq_length,
            "examples": n,
            "total_tokens": total,
            "min": int(lengths.min()) if n else 0,
            "mean": round(float(lengths.mean()), 1) if n else 0.0,
            "p50": _percentile(lengths, 50),
            "p95": _percentile(lengths, 95),
            "max": int(lengths.max()) if n else 0,
            "trained_tokens": trained,
            "trained_share": round(trained / total, 4) if total else 0.0,
            "over_max_length": self.over,
            "truncation": {
                "examples_truncated": self.over,
                "tokens_cut": self.tokens_cut,
                "examples_losing_all_trained": self.dropped,
            },
            "n_epochs": epochs,
            "estimated_training_tokens": estimated,
            "throughput_tokens_per_s": throughput,
            "estimated_time_s": round(estimated / throughput, 1) if throughput else None,
            "device": device,
        }
        if len(self.rejected):
            rejected = np.frombuffer(self.rejected, dtype=np.uint32)
            report["rejected"] = {
                "examples": len(rejected),
                "total_tokens": int(rejected.sum(dtype=np.int64)),
                "mean": round(float(rejected.mean()), 1),
                "max": int(rejected.max()),
                "over_max_length": self.rejected_over,
            }
        return report


def _count_spans(encoding: Any, spans: list[tuple[int, int]] | None) -> tuple[int, int | None] | None:
    """(tokens covering the spans, token index where the first span starts), or None when offsets cannot tell."""
    if spans is None or not hasattr(encoding, "char_to_token"):
        return None
    if not spans:
        return 0, None
    total = 0
    for start, end in spans:
        if end > start:
            a = encoding.char_to_token(start)
            # the last token: the one before the token that starts right after the content (the
            # end-of-turn marker); a character split over several byte tokens (CJK) maps to one only
            after = encoding.char_to_token(end)
            b = after - 1 if after is not None else encoding.char_to_token(end - 1)
            if a is None or b is None or b < a:
                return None
            total += b - a + 1
    position = encoding.char_to_token(spans[0][0])
    if position is None:  # an empty first trained turn: its place is not a character of its own
        return None
    return total, position


def _trained_text(message: dict[str, Any], with_tool_calls: bool) -> str:
    """What an assistant turn trains on besides its end-of-turn token: its content, and its tool
    calls (as JSON, an approximation of the template's own rendering) when the template renders them."""
    content = message.get("content")
    text = content if isinstance(content, str) else ("" if content is None else json.dumps(content))
    if with_tool_calls and message.get("tool_calls"):
        text += json.dumps(message["tool_calls"], ensure_ascii=False)
    return text


def _percentile(values: Any, q: float) -> float:
    """Linear-interpolated percentile (numpy's default), rounded to 0.1; 0 for no data."""
    import numpy as np

    return round(float(np.percentile(values, q)), 1) if len(values) else 0.0


def _device() -> str:
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"
