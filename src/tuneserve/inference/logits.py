"""From one decode step's logits to one token per row: penalties, temperature, top_p, logprobs.

Owns: the per-row logits processing of a batch (OpenAI semantics), the choice of each row's
token (greedy, or sampled with the row's own torch.Generator, so a seeded row gives the same
tokens whatever shares its batch), JSON-mode candidate selection, and the logprobs a row reports.
Does not own: the batch, the model, the KV cache (batcher.py); detokenized text (sampling.py).

The processed distribution of a row is log_softmax((logits - penalties) / T) (T = 1 when the row
is greedy). Its token is the argmax (greedy) or a draw after top_p truncation; the reported
logprobs come from that distribution before top_p truncation and the JSON constraint.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tuneserve.inference.json_mode import JsonPrefix
from tuneserve.inference.sampling import REPLACEMENT_CHAR, SamplingParams, TokenLogprob, TopLogprob

if TYPE_CHECKING:
    import torch

JSON_CANDIDATES = 64  # JSON mode tries the most likely candidates, in order, in groups of this many
JSON_SEARCH_LIMIT = 4096  # then gives up and forces the shortest closing text


class Vocab:
    """Per-token text and bytes of one tokenizer, computed on first use and cached."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.special = set(tokenizer.all_special_ids)
        self._pieces: dict[int, tuple[str, list[int]]] = {}
        self._json_text: dict[int, str | None] = {}
        self._byte_decoder = _byte_decoder()

    def piece(self, token_id: int) -> tuple[str, list[int]]:
        """(text, bytes) of one token as OpenAI's logprobs show it: bytes may be part of a character."""
        cached = self._pieces.get(token_id)
        if cached is None:
            raw = self.tokenizer.convert_ids_to_tokens(token_id)
            data = self._raw_bytes(raw) if isinstance(raw, str) else None
            if data is None:
                text = self.tokenizer.decode([token_id])
                data = text.encode("utf-8")
            else:
                text = data.decode("utf-8", errors="replace")
            cached = self._pieces[token_id] = (text, list(data))
        return cached

    def json_text(self, token_id: int) -> str | None:
        """The text a token adds in JSON mode, or None when it may not be used there (special
        tokens, empty text, part of a multi-byte character)."""
        if token_id in self._json_text:
            return self._json_text[token_id]
        text = None
        if token_id not in self.special:
            piece, _ = self.piece(token_id)
            if piece and REPLACEMENT_CHAR not in piece:
                text = piece
        self._json_text[token_id] = text
        return text

    def _raw_bytes(self, raw: str) -> bytes | None:
        # GPT-2 style byte-level BPE (SmolLM2, Llama 3, Qwen): every character stands for one byte.
        if raw and all(ch in self._byte_decoder for ch in raw):
            return bytes(self._byte_decoder[ch] for ch in raw)
        # sentencepiece: "▁" is a space, <0xNN> a byte
        if raw.startswith("<0x") and raw.endswith(">") and len(raw) == 6:
            try:
                return bytes([int(raw[3:5], 16)])
            except ValueError:
                return None
        if "\u2581" in raw:
            return raw.replace("\u2581", " ").encode("utf-8")
        return None


def _byte_decoder() -> dict[str, int]:
    """The inverse of GPT-2's bytes_to_unicode table."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(printable, chars)}


def apply_penalties(logits: torch.Tensor, generated: list[int], params: SamplingParams) -> None:
    """OpenAI's presence and frequency penalties, in place on one row, over its generated tokens."""
    import torch

    if not generated or (params.presence_penalty == 0 and params.frequency_penalty == 0):
        return
    ids, counts = torch.tensor(generated, device=logits.device).unique(return_counts=True)
    penalty = params.frequency_penalty * counts.to(logits.dtype) + params.presence_penalty
    logits.index_put_((ids,), -penalty, accumulate=True)


def choose(
    logits: torch.Tensor,
    params: SamplingParams,
    generator: torch.Generator,
    json_state: JsonPrefix | None,
    vocab: Vocab,
    tokens_left: int | None = None,
) -> tuple[int, JsonPrefix | None, TokenLogprob | None]:
    """One row: its token, its next JSON state (JSON mode), and its logprob entry (when asked).

    `logits` is the row's penalized float32 logits (V,); it is not modified. In JSON mode, once
    `tokens_left` (this one included) is no more than the shortest completion needs, the row
    only takes tokens that follow that completion, so the object is closed within max_tokens.
    """
    import torch

    greedy = params.greedy
    scaled = logits if greedy else logits / params.temperature
    if json_state is not None:
        token, json_state = _choose_json(scaled, greedy, params.top_p, generator, json_state, vocab, tokens_left)
    elif greedy:
        token = int(torch.argmax(scaled))
    else:
        token = _sample(scaled, params.top_p, generator)
    entry = _logprob_entry(scaled, token, params.top_logprobs, vocab) if params.logprobs else None
    return token, json_state, entry


def _draw(weights: torch.Tensor, generator: torch.Generator) -> int:
    """One index drawn in proportion to `weights` (not normalized): by inverse CDF, a cumulative sum, one uniform
    number and a binary search. torch.multinomial took 1.5 ms per row over a 49k vocabulary (10-26 ms on busy
    cores) and was most of a CPU decoding step; this takes about 0.14 ms, and a seed still repeats its draws."""
    import torch

    cdf = torch.cumsum(weights.to(torch.float64), dim=-1)
    u = torch.rand(1, generator=generator, dtype=torch.float64) * cdf[-1]
    # right=True: a zero-weight index (a flat step of the cdf) is never drawn.
    return min(int(torch.searchsorted(cdf, u, right=True)), weights.numel() - 1)


def _sample(scaled: torch.Tensor, top_p: float, generator: torch.Generator) -> int:
    import torch

    probs = torch.softmax(scaled, dim=-1)
    if top_p >= 1:
        return _draw(probs, generator)
    sorted_probs, order = torch.sort(probs, descending=True)
    cumulative = torch.cumsum(sorted_probs, dim=-1)
    # keep the smallest prefix whose mass reaches top_p (the first token always stays)
    keep = (cumulative - sorted_probs) < top_p
    keep[0] = True
    kept = sorted_probs[keep]
    return int(order[_draw(kept, generator)])


def _fits(state: JsonPrefix, tokens_after: int | None) -> bool:
    """Whether the object can still be closed in `tokens_after` tokens (one character each at worst)."""
    if tokens_after is None or state.complete:
        return True
    if tokens_after >= len(state.stack) + 8:  # the longest closing is the stack plus a few characters
        return True
    return len(state.closing()) <= tokens_after


def _choose_json(scaled, greedy, top_p, generator, state: JsonPrefix, vocab: Vocab, tokens_left: int | None):
    """The most likely candidates that keep the text a JSON-object prefix (and closable within
    `tokens_left`): the first of them when greedy, else a draw among the allowed ones of the first
    group of candidates that has any."""
    import torch

    order = torch.argsort(scaled, descending=True)
    limit = min(JSON_SEARCH_LIMIT, order.numel())
    for start in range(0, limit, JSON_CANDIDATES):
        ids = order[start : start + JSON_CANDIDATES].tolist()
        allowed: list[tuple[int, JsonPrefix]] = []
        for token in ids:
            text = vocab.json_text(token)
            nxt = state.feed(text) if text is not None else None
            if nxt is not None and _fits(nxt, None if tokens_left is None else tokens_left - 1):
                if greedy:
                    return token, nxt
                allowed.append((token, nxt))
        if allowed:
            if len(allowed) == 1:
                return allowed[0]
            weights = torch.softmax(scaled[torch.tensor([t for t, _ in allowed])], dim=-1)
            if top_p < 1:
                sorted_w, idx = torch.sort(weights, descending=True)
                keep = (torch.cumsum(sorted_w, -1) - sorted_w) < top_p
                keep[0] = True
                weights = torch.zeros_like(weights).index_put_((idx[keep],), sorted_w[keep])
            return allowed[_draw(weights, generator)]
    # Nothing likely fits: force the first character of the shortest completion.
    closing = state.closing()
    token = vocab.tokenizer.encode(closing[:1], add_special_tokens=False)[0]
    text = vocab.json_text(token)
    nxt = state.feed(text) if text is not None else None
    if nxt is None:
        raise RuntimeError("JSON mode found no token that continues the object")
    return token, nxt


def _logprob_entry(scaled: torch.Tensor, token: int, top: int, vocab: Vocab) -> TokenLogprob:
    import torch

    logprobs = torch.log_softmax(scaled.float(), dim=-1)
    text, data = vocab.piece(token)
    alternatives: tuple[TopLogprob, ...] = ()
    if top > 0:
        values, ids = torch.topk(logprobs, top)
        pieces = [(vocab.piece(i), v) for v, i in zip(values.tolist(), ids.tolist())]
        alternatives = tuple(TopLogprob(token=t, logprob=v, bytes=b) for (t, b), v in pieces)
    return TokenLogprob(token=text, logprob=float(logprobs[token]), bytes=data, top_logprobs=alternatives)
