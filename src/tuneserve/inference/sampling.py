"""What a request asks the engine for, what comes back, and how generated tokens become text.

Owns: `SamplingParams` and `Generation` (the engine's contract with the API routes), their
translation into a transformers `GenerationConfig`, and `TextStream`, which turns token ids into
text deltas that honour stop strings.
Does not own: loading models or adapters, threads, locking (engine.py); HTTP shapes (api/).
"""

from __future__ import annotations

from dataclasses import dataclass

REPLACEMENT_CHAR = "\ufffd"  # what a byte-level tokenizer decodes half of a multi-byte character to


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int | None = None  # None -> min(512, context left)
    temperature: float = 1.0  # 0 -> greedy
    top_p: float = 1.0
    stop: tuple[str, ...] = ()  # output is cut before the first one, finish_reason "stop"
    seed: int | None = None  # same seed + same request -> same output


@dataclass(frozen=True)
class Generation:
    text: str
    finish_reason: str  # "stop" (EOS or a stop string) | "length"
    prompt_tokens: int
    completion_tokens: int


def generation_config(params: SamplingParams, max_new_tokens: int, eos_ids: list[int], pad_id: int | None):
    """An explicit GenerationConfig: OpenAI semantics only (temperature, top_p), none of the hub defaults."""
    from transformers import GenerationConfig

    common = dict(
        max_new_tokens=max_new_tokens,
        eos_token_id=eos_ids,
        pad_token_id=pad_id if pad_id is not None else (eos_ids[0] if eos_ids else None),
        # transformers fills unset fields from the model's generation_config and then from global
        # defaults (top_k=50); pin them so a hub model's repetition_penalty or top_k never leaks in.
        repetition_penalty=1.0,
        num_beams=1,
    )
    if params.temperature <= 0:
        return GenerationConfig(do_sample=False, **common)
    return GenerationConfig(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=0, **common)


class TextStream:
    """Decode a growing list of token ids into text deltas, cutting at the first stop string.

    The whole completion is decoded at every token rather than token by token: decoding pieces
    separately drops or adds leading spaces on sentencepiece tokenizers and splits multi-byte
    characters, so concatenated deltas would differ from the non-streamed text. The cost is
    quadratic in the completion length but small next to a forward pass.
    """

    def __init__(self, tokenizer, stop: tuple[str, ...] = ()):
        self._tokenizer = tokenizer
        self._stop = tuple(s for s in stop if s)  # an empty stop string would match before any text
        self.ids: list[int] = []
        self.text = ""
        self.stopped = False  # a stop string was found; `text` is cut before it
        self._emitted = 0  # characters of `text` already handed out as deltas

    def add(self, token_id: int) -> str:
        """Take one generated token; return the text that is now safe to show (maybe "")."""
        self.ids.append(token_id)
        text = self._tokenizer.decode(self.ids, skip_special_tokens=True)
        cut = self._first_stop(text)
        if cut is not None:
            self.stopped = True
            self.text = text[:cut]
            return self._emit(cut)
        self.text = text
        return self._emit(len(text) - self._held_back(text))

    def finish(self) -> str:
        """Generation ended: everything not yet shown is final (no stop string can complete now)."""
        return self._emit(len(self.text))

    def _emit(self, end: int) -> str:
        if end <= self._emitted:
            return ""
        delta = self.text[self._emitted : end]
        self._emitted = end
        return delta

    def _first_stop(self, text: str) -> int | None:
        # Search only where a new match can be: text already shown never contains a stop string.
        start = max(0, self._emitted - max((len(s) for s in self._stop), default=0))
        found = [i for s in self._stop if (i := text.find(s, start)) != -1]
        return min(found) if found else None

    def _held_back(self, text: str) -> int:
        """How many trailing characters must wait: a half character, or a possible stop-string prefix."""
        end = len(text.rstrip(REPLACEMENT_CHAR))
        hold = len(text) - end
        longest = 0
        for stop in self._stop:
            for k in range(min(len(stop) - 1, end), longest, -1):
                if text.endswith(stop[:k], 0, end):
                    longest = k
                    break
        return hold + longest
