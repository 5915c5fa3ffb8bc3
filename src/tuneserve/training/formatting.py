"""Turn conversations into token ids and loss labels through the base model's own chat template.

Owns: rendering an Example with `tokenizer.apply_chat_template`, finding the tokens of each
trained assistant turn (content + end-of-turn token), masking everything else with -100, and
truncation. Does not own: reading or validating data files (tuneserve.data), batching/padding
(the recipes), or choosing the template (always the tokenizer's own, so that training and
serving format prompts identically).

Why spans come from rendering prefixes: most chat templates (SmolLM2's included) have no
`{% generation %}` markers, so `return_assistant_tokens_mask` cannot be used. The tokens of
assistant turn i are the difference between rendering messages[:i] with a generation prompt and
rendering messages[:i+1]. That holds only when rendering is prefix-stable, which is checked
token by token; when it is not (templates that rewrite earlier turns), character offsets of the
rendered text are used instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from tuneserve.data.records import Example

IGNORE_INDEX = -100  # the label value torch's cross-entropy (and ours) skips


@dataclass(frozen=True)
class Formatted:
    """One tokenized conversation: `labels[i]` is the id to train at position i, or -100."""

    input_ids: list[int]
    labels: list[int]

    @property
    def n_trained(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


def format_examples(tokenizer: Any, examples: Iterable[Example], max_seq_length: int) -> tuple[list[Formatted], int]:
    """Format every example; return the ones with at least one trained token, and how many were dropped.

    An example is dropped when truncation cut off all its trained tokens (or it had none):
    it would add nothing but padding to a batch.
    """
    kept: list[Formatted] = []
    dropped = 0
    for example in examples:
        formatted = format_example(tokenizer, example.messages, max_seq_length)
        if formatted.n_trained == 0:
            dropped += 1
        else:
            kept.append(formatted)
    return kept, dropped


def format_example(tokenizer: Any, messages: Sequence[dict[str, Any]], max_seq_length: int) -> Formatted:
    """Render one conversation; labels are set only on trained assistant turns; keep the first `max_seq_length` tokens."""
    clean = [_strip_weight(m) for m in messages]
    trained = [i for i, m in enumerate(messages) if m["role"] == "assistant" and m.get("weight", 1) != 0]
    formatted = _by_token_prefixes(tokenizer, clean, trained)
    if formatted is None:
        formatted = _by_char_offsets(tokenizer, clean, trained)
    return Formatted(formatted.input_ids[:max_seq_length], formatted.labels[:max_seq_length])


def _strip_weight(message: dict[str, Any]) -> dict[str, Any]:
    """The template sees the message without our training-only "weight" key."""
    return {k: v for k, v in message.items() if k != "weight"}


def _render_ids(tokenizer: Any, messages: Sequence[dict[str, Any]], add_generation_prompt: bool = False) -> list[int]:
    if not messages:
        return []
    return list(tokenizer.apply_chat_template(list(messages), tokenize=True, return_dict=False, add_generation_prompt=add_generation_prompt))


def _render_text(tokenizer: Any, messages: Sequence[dict[str, Any]], add_generation_prompt: bool = False) -> str:
    if not messages:
        return ""
    return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=add_generation_prompt)


def _by_token_prefixes(tokenizer: Any, messages: list[dict[str, Any]], trained: list[int]) -> Formatted | None:
    """Spans from token-level prefix renders; None when the template is not prefix-stable."""
    input_ids = _render_ids(tokenizer, messages)
    labels = [IGNORE_INDEX] * len(input_ids)
    for i in trained:
        prompt = _render_ids(tokenizer, messages[:i], add_generation_prompt=True)
        upto = _render_ids(tokenizer, messages[: i + 1])
        if input_ids[: len(prompt)] != prompt or input_ids[: len(upto)] != upto or len(upto) <= len(prompt):
            return None
        end = _trim_trailing_whitespace_tokens(tokenizer, upto, len(prompt), len(upto))
        labels[len(prompt) : end] = input_ids[len(prompt) : end]
    return Formatted(input_ids, labels)


def _trim_trailing_whitespace_tokens(tokenizer: Any, ids: list[int], start: int, end: int) -> int:
    """Drop the template's separator after the end-of-turn token (SmolLM2's "\\n" after <|im_end|>).

    The model is taught to emit the end-of-turn token and stop; the newline after it is template
    glue the server adds itself, so training on it would teach nothing useful.
    """
    while end > start and tokenizer.decode([ids[end - 1]]).strip() == "":
        end -= 1
    return end


def _by_char_offsets(tokenizer: Any, messages: list[dict[str, Any]], trained: list[int]) -> Formatted:
    """Fallback: find each trained turn's characters in the rendered text and label the tokens starting there."""
    text = _render_text(tokenizer, messages)
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    input_ids: list[int] = list(encoding["input_ids"])
    offsets: list[tuple[int, int]] = list(encoding["offset_mapping"])
    labels = [IGNORE_INDEX] * len(input_ids)
    cursor = 0
    for i in trained:
        start, end = _char_span(tokenizer, text, messages, i, cursor)
        cursor = end
        for t, (s, _) in enumerate(offsets):
            if start <= s < end:
                labels[t] = input_ids[t]
    return Formatted(input_ids, labels)


def _char_span(tokenizer: Any, text: str, messages: list[dict[str, Any]], i: int, cursor: int) -> tuple[int, int]:
    """Characters of assistant turn i (content + end-of-turn token) in the full rendered text."""
    prompt = _render_text(tokenizer, messages[:i], add_generation_prompt=True)
    upto = _render_text(tokenizer, messages[: i + 1])
    if text.startswith(prompt) and text.startswith(upto) and len(upto) > len(prompt):
        start, end = len(prompt), len(upto)
        while end > start and text[end - 1].isspace():
            end -= 1
        return start, end
    # The template rewrites earlier text: locate the content itself, then its end-of-turn token.
    content = str(messages[i].get("content") or "")
    start = text.find(content, cursor)
    if start < 0:
        return cursor, cursor
    end = start + len(content)
    eos = tokenizer.eos_token or ""
    rest = text[end:]
    stripped = rest.lstrip()
    if eos and stripped.startswith(eos):
        end += len(rest) - len(stripped) + len(eos)
    return start, end
