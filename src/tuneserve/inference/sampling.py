"""What a request asks the engine for, what comes back, and how generated tokens become text.

Owns: the engine's contract with the API routes (`SamplingParams`, `Delta`, `Generation`,
`TokenLogprob`, `TopLogprob`), and `TextStream`, which turns token ids into text deltas that
honour stop strings.
Does not own: the numbers (logits.py: penalties, temperature, top_p, logprobs), JSON-mode
constraints (json_mode.py), batching and threads (batcher.py), models (engine.py), HTTP shapes (api/).
"""

from __future__ import annotations

from dataclasses import dataclass

REPLACEMENT_CHAR = "\ufffd"  # what a byte-level tokenizer decodes half of a multi-byte character to
MAX_TOP_LOGPROBS = 20
# Below this temperature sampling is greedy: float32 logits divided by a smaller one overflow to inf,
# and the softmax of inf is NaN (a temperature of 1e-300 was a 500). The argmax is what such a
# temperature samples anyway.
GREEDY_BELOW_TEMPERATURE = 1e-5


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int | None = None  # None -> min(512, context left)
    temperature: float = 1.0  # 0 (or below GREEDY_BELOW_TEMPERATURE) -> greedy
    top_p: float = 1.0
    stop: tuple[str, ...] = ()  # output is cut before the first one, finish_reason "stop"
    seed: int | None = None  # same seed + same request -> same output, whatever else shares the batch
    presence_penalty: float = 0.0  # OpenAI: logit -= presence * (count > 0), over the row's generated tokens
    frequency_penalty: float = 0.0  # OpenAI: logit -= frequency * count
    logprobs: bool = False
    top_logprobs: int = 0  # 0..20 alternatives per token (needs logprobs)
    json_mode: bool = False  # response_format {"type": "json_object"}: the text is one JSON object

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW_TEMPERATURE

    def __post_init__(self):
        if not 0 <= self.top_logprobs <= MAX_TOP_LOGPROBS:
            raise ValueError(f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}")


@dataclass(frozen=True)
class TopLogprob:
    token: str
    logprob: float
    bytes: list[int]


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token: its text, its log-probability and the most likely alternatives.

    The log-probabilities are the log-softmax of the logits after the presence/frequency penalties
    and the temperature (temperature 0 counts as 1), before top_p and the JSON-mode constraint: the
    distribution the token was drawn from, before truncation. Sorted, most likely first.
    """

    token: str
    logprob: float
    bytes: list[int]
    top_logprobs: tuple[TopLogprob, ...] = ()


@dataclass(frozen=True)
class Delta:
    """A piece of streamed output: new text, and the logprobs of the tokens consumed since the last one."""

    text: str
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class Generation:
    text: str
    finish_reason: str  # "stop" (EOS, a stop string, a complete JSON object) | "length"
    prompt_tokens: int
    completion_tokens: int  # generated tokens, the EOS token included
    logprobs: tuple[TokenLogprob, ...] | None = None  # one per text token (not the EOS), when asked


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
