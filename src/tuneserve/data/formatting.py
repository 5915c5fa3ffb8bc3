"""Turn conversations into token ids and loss labels through the base model's own chat template.

Owns: rendering an Example with `tokenizer.apply_chat_template`, finding the tokens of each
trained assistant turn (content + end-of-turn token), masking everything else with -100,
truncation, formatting a preference pair as DPO trains it, and which formatted examples training
keeps (`Formatted.trainable`). Does not own: reading or validating data files (data/formats.py,
data/validation.py), batching/padding (training/), or choosing the template (always the
tokenizer's own, so that training and serving format prompts identically). It needs no torch:
the training recipes, the preview (data/preview.py) and the token statistics (data/tokens.py)
all call the same functions here, so what they show and count is exactly what is trained.

Why spans come from rendering prefixes: most chat templates (SmolLM2's included) have no
`{% generation %}` markers, so `return_assistant_tokens_mask` cannot be used. The tokens of
assistant turn i are the difference between rendering messages[:i] with a generation prompt and
rendering messages[:i+1]. That holds only when rendering is prefix-stable, which is checked
token by token; when it is not (templates that rewrite earlier turns), character offsets of the
rendered text are used instead.

Tools: `Example.tools` go to the template as `tools=` and assistant `tool_calls` stay in the
messages (their "arguments" parsed from the JSON string to an object, the form HF templates
expect), so a template that supports tools renders both. Tool-call turns are trained like any
assistant turn; tool outputs (role "tool") never are. A template that ignores `tool_calls`
(SmolLM2's) would render a tool-call turn as an empty assistant turn, and training on it would
teach the model to answer with nothing; for such templates the calls are written into the turn's
content as `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>` (the Hermes/Qwen text
form), so the model learns which call to make. Tool definitions a template ignores stay ignored:
serving renders prompts with the same template, so the model sees the same thing in both.

Raw text (TextExample) is tokenized as it is: no chat template and no special tokens added (text
already written in a model's template carries its own), every token labelled, head kept.
Preference pairs cannot be trained by SFT: format_examples raises DataError (DPO is its own
recipe). `format_pair` formats both answers after the same prompt, the prompt's own assistant
turns as context; `format_record` gives a pair's chosen side, for the preview and the statistics.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from tuneserve.data.records import DataError, Example, PreferenceExample, Record, TextExample

IGNORE_INDEX = -100  # the label value torch's cross-entropy (and ours) skips
UNLIMITED = sys.maxsize  # a max_seq_length that keeps everything: format whole, then `Formatted.truncated`


@dataclass(frozen=True)
class Formatted:
    """One tokenized conversation: `labels[i]` is the id to train at position i, or -100."""

    input_ids: list[int]
    labels: list[int]

    @property
    def n_trained(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)

    @property
    def trainable(self) -> bool:
        """Whether training keeps it: a trained token left, and more than one token (something to predict)."""
        return self.n_trained > 0 and len(self.input_ids) >= 2

    def all_trained(self) -> Formatted:
        """Every token trained, prompts and template included (`train_on_inputs`)."""
        return Formatted(self.input_ids, list(self.input_ids))

    def trained_spans(self) -> list[list[int]]:
        """Half-open [start, end) token ranges that are trained on."""
        spans: list[list[int]] = []
        for i, label in enumerate(self.labels):
            if label == IGNORE_INDEX:
                continue
            if spans and spans[-1][1] == i:
                spans[-1][1] = i + 1
            else:
                spans.append([i, i + 1])
        return spans

    def truncated(self, max_seq_length: int) -> Formatted:
        """The first `max_seq_length` tokens (training keeps the head); the same object when it fits."""
        if len(self.input_ids) <= max_seq_length:
            return self
        return Formatted(self.input_ids[:max_seq_length], self.labels[:max_seq_length])


def format_examples(tokenizer: Any, examples: Iterable[Record], max_seq_length: int) -> tuple[list[Formatted], int]:
    """Format every example; return the ones with at least one trained token, and how many were dropped.

    An example is dropped when truncation cut off all its trained tokens (or it had none; a text
    of one token has nothing to predict): it would add nothing but padding to a batch.
    Preference pairs raise DataError: they need the DPO recipe.
    """
    kept: list[Formatted] = []
    dropped = 0
    for example in examples:
        if isinstance(example, PreferenceExample):
            raise DataError(
                "preference data needs method dpo: this file holds preference pairs (chosen/rejected), "
                "which supervised fine-tuning cannot train on",
                line=example.line,
                code="preference_data_for_sft",
            )
        formatted = format_record(tokenizer, example, max_seq_length)
        if formatted.trainable:
            kept.append(formatted)
        else:
            dropped += 1
    return kept, dropped


def format_record(tokenizer: Any, record: Record, max_seq_length: int) -> Formatted:
    """One record as training formats it: a conversation's trained turns, every token of a text, a
    preference pair's chosen answer after its prompt (as the DPO recipe formats it)."""
    if isinstance(record, TextExample):
        return format_text(tokenizer, record.text, max_seq_length)
    if isinstance(record, PreferenceExample):
        return format_pair(tokenizer, record, max_seq_length)[0]
    if isinstance(record, Example):
        return format_example(tokenizer, record.messages, max_seq_length, tools=record.tools)
    raise TypeError(f"not a record: {type(record).__name__}")


def format_pair(tokenizer: Any, record: PreferenceExample, max_seq_length: int) -> tuple[Formatted, Formatted]:
    """(chosen, rejected): each answer after the same prompt, only the answer labelled (the prompt's
    assistant turns are context). DPO keeps a pair only when both are `trainable`."""
    prompt = [{**m, "weight": 0} if m.get("role") == "assistant" else m for m in record.prompt]
    chosen = format_example(tokenizer, [*prompt, record.chosen], max_seq_length, tools=record.tools)
    rejected = format_example(tokenizer, [*prompt, record.rejected], max_seq_length, tools=record.tools)
    return chosen, rejected


def format_text(tokenizer: Any, text: str, max_seq_length: int) -> Formatted:
    """Raw text as it is (no template, no added special tokens): every token trained, the first `max_seq_length` kept."""
    input_ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return Formatted(input_ids, list(input_ids)).truncated(max_seq_length)


def format_example(
    tokenizer: Any, messages: Sequence[dict[str, Any]], max_seq_length: int, *, tools: Sequence[dict[str, Any]] | None = None
) -> Formatted:
    """Render one conversation; labels are set only on trained assistant turns; keep the first `max_seq_length` tokens."""
    inline_calls = any(m.get("tool_calls") for m in messages) and not renders_tool_calls(tokenizer)
    clean = [for_template(m, inline_calls) for m in messages]
    trained = [i for i, m in enumerate(messages) if m["role"] == "assistant" and m.get("weight", 1) != 0]
    renderer = _Renderer(tokenizer, list(tools) if tools else None)
    formatted = _by_token_prefixes(renderer, clean, trained)
    if formatted is None:
        formatted = _by_char_offsets(renderer, clean, trained)
    return formatted.truncated(max_seq_length)


def for_template(message: dict[str, Any], inline_calls: bool) -> dict[str, Any]:
    """The message as the template sees it: no training-only "weight"; tool-call arguments as objects."""
    out = {k: v for k, v in message.items() if k != "weight"}
    calls = out.get("tool_calls")
    if not calls:
        return out
    parsed = [
        {**call, "function": {**call["function"], "arguments": _arguments(call["function"].get("arguments"))}} for call in calls
    ]
    if inline_calls:
        text = "\n".join(
            "<tool_call>\n"
            + json.dumps({"name": c["function"]["name"], "arguments": c["function"]["arguments"]}, ensure_ascii=False)
            + "\n</tool_call>"
            for c in parsed
        )
        out.pop("tool_calls")
        out["content"] = f"{out.get('content') or ''}\n{text}" if out.get("content") else text
    else:
        out["tool_calls"] = parsed
    return out


def _arguments(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value if value is not None else {}


_PROBE_NAME = "tuneserve_probe_function"
_renders_tool_calls: dict[tuple[Any, ...], bool] = {}


def renders_tool_calls(tokenizer: Any) -> bool:
    """Whether the tokenizer's chat template writes an assistant message's `tool_calls` (cached per template)."""
    key = (
        tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else repr(tokenizer.chat_template),
        tokenizer.bos_token,
        tokenizer.eos_token,
    )
    if key not in _renders_tool_calls:
        probe = [
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"id": "call_0", "type": "function", "function": {"name": _PROBE_NAME, "arguments": {}}}],
            },
        ]
        try:
            _renders_tool_calls[key] = _PROBE_NAME in tokenizer.apply_chat_template(probe, tokenize=False)
        except Exception:  # a template that raises on tool calls does not render them
            _renders_tool_calls[key] = False
    return _renders_tool_calls[key]


@dataclass(frozen=True)
class _Renderer:
    """apply_chat_template with this example's tools."""

    tokenizer: Any
    tools: list[dict[str, Any]] | None

    def ids(self, messages: Sequence[dict[str, Any]], add_generation_prompt: bool = False) -> list[int]:
        if not messages:
            return []
        return list(
            self.tokenizer.apply_chat_template(
                list(messages), tools=self.tools, tokenize=True, return_dict=False, add_generation_prompt=add_generation_prompt
            )
        )

    def text(self, messages: Sequence[dict[str, Any]], add_generation_prompt: bool = False) -> str:
        if not messages:
            return ""
        return self.tokenizer.apply_chat_template(
            list(messages), tools=self.tools, tokenize=False, add_generation_prompt=add_generation_prompt
        )


def _by_token_prefixes(renderer: _Renderer, messages: list[dict[str, Any]], trained: list[int]) -> Formatted | None:
    """Spans from token-level prefix renders; None when the template is not prefix-stable."""
    tokenizer = renderer.tokenizer
    input_ids = renderer.ids(messages)
    labels = [IGNORE_INDEX] * len(input_ids)
    for i in trained:
        prompt = renderer.ids(messages[:i], add_generation_prompt=True)
        upto = renderer.ids(messages[: i + 1])
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


def _by_char_offsets(renderer: _Renderer, messages: list[dict[str, Any]], trained: list[int]) -> Formatted:
    """Fallback: find each trained turn's characters in the rendered text and label the tokens starting there."""
    tokenizer = renderer.tokenizer
    text = renderer.text(messages)
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    input_ids: list[int] = list(encoding["input_ids"])
    offsets: list[tuple[int, int]] = list(encoding["offset_mapping"])
    labels = [IGNORE_INDEX] * len(input_ids)
    cursor = 0
    for i in trained:
        start, end = _char_span(renderer, text, messages, i, cursor)
        cursor = end
        for t, (s, _) in enumerate(offsets):
            if start <= s < end:
                labels[t] = input_ids[t]
    return Formatted(input_ids, labels)


def _char_span(renderer: _Renderer, text: str, messages: list[dict[str, Any]], i: int, cursor: int) -> tuple[int, int]:
    """Characters of assistant turn i (content + end-of-turn token) in the full rendered text."""
    tokenizer = renderer.tokenizer
    prompt = renderer.text(messages[:i], add_generation_prompt=True)
    upto = renderer.text(messages[: i + 1])
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
