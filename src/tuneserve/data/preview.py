"""Previewing training examples as the model sees them: rendered by its chat template, with the
trained tokens marked (`tuneserve data preview FILE --model M [-n 3]`, GET /v1/files/{id}/preview), or as
the token ids themselves (Together's POST /v1/fine-tunes/preview: ids, labels, token strings, trained spans,
"truncated", "num_tokens", "num_trained_tokens").

Owns: cutting the first n formatted examples into segments of trained / context tokens, and
printing them with rich. Does not own: rendering or masking (data/formatting.py does it; the
preview calls the very functions training calls, so what it shows is what is trained), or reading
formats (data/formats.py).

Each preview is {"line", "n_tokens", "n_trained", "truncated", "n_tokens_full", "segments"}:
`segments` are the maximal runs of tokens with the same trained flag, decoded with the special
tokens kept visible (<|im_start|>...), covering exactly the tokens the model sees (the first
`max_seq_length`). `n_tokens` counts those, `n_tokens_full` the untruncated rendering. Raw text
records are trained on every token; a preference pair shows its prompt and the chosen answer
(formatted as the DPO recipe formats it). The tokenizer is models.load_tokenizer's, the one
training loads; it imports transformers when first called.
"""

from __future__ import annotations

from itertools import islice
from pathlib import Path
from typing import Any

from tuneserve.data.formats import iter_examples
from tuneserve.data.formatting import IGNORE_INDEX, UNLIMITED, Formatted, format_record
from tuneserve.data.records import Record
from tuneserve.models import load_tokenizer


def preview_examples(path: Path, model: str, n: int = 3, *, max_seq_length: int = 1024) -> list[dict[str, Any]]:
    """The first `n` examples of `path` as `model` sees them (its tokenizer and chat template).

    Raises DataError (naming the line) when the file cannot be read, ModelNotFound for an unknown model.
    """
    if n < 1 or max_seq_length < 1:
        raise ValueError("n and max_seq_length must be at least 1")
    tokenizer = load_tokenizer(model)
    return [preview_record(tokenizer, record, max_seq_length) for record in islice(iter_examples(Path(path)), n)]


def tokenized_examples(
    path: Path, model: str, n: int, *, max_seq_length: int, train_on_inputs: bool = False
) -> list[dict[str, Any]]:
    """The first `n` examples of `path` as token ids, the way training tokenizes them: for each, "input_ids",
    "labels" (-100 where not trained), "tokens" (the tokenizer's own token strings), "trained_spans" (half-open
    [start, end) ranges of trained tokens) and "truncated". Together's preview (POST /v1/fine-tunes/preview)."""
    tokenizer = load_tokenizer(model)
    rows = []
    for record in islice(iter_examples(Path(path)), n):
        whole, formatted = _formatted(tokenizer, record, max_seq_length)
        if train_on_inputs:
            formatted = formatted.all_trained()
        rows.append(
            {
                "input_ids": formatted.input_ids,
                "labels": formatted.labels,
                "tokens": tokenizer.convert_ids_to_tokens(formatted.input_ids),
                "trained_spans": formatted.trained_spans(),
                "truncated": len(whole.input_ids) > len(formatted.input_ids),
                "num_tokens": len(formatted.input_ids),
                "num_trained_tokens": formatted.n_trained,
            }
        )
    return rows


def _formatted(tokenizer: Any, record: Record, max_seq_length: int) -> tuple[Formatted, Formatted]:
    """(whole, kept): the record formatted in full, and its first `max_seq_length` tokens, as training keeps them."""
    whole = format_record(tokenizer, record, UNLIMITED)
    return whole, whole.truncated(max_seq_length)  # what format_record(..., max_seq_length) gives, without a second render


def preview_record(tokenizer: Any, record: Record, max_seq_length: int) -> dict[str, Any]:
    """One record's preview (see the module docstring for its keys)."""
    whole, formatted = _formatted(tokenizer, record, max_seq_length)
    full = len(whole.input_ids)
    return {
        "line": record.line,
        "n_tokens": len(formatted.input_ids),
        "n_trained": formatted.n_trained,
        "truncated": full > len(formatted.input_ids),
        "n_tokens_full": full,
        "segments": segments(tokenizer, formatted),
    }


def segments(tokenizer: Any, formatted: Formatted) -> list[dict[str, Any]]:
    """Maximal runs of tokens with the same trained flag, each decoded as it is (special tokens kept)."""
    runs: list[tuple[bool, list[int]]] = []
    for token, label in zip(formatted.input_ids, formatted.labels):
        trained = label != IGNORE_INDEX
        if runs and runs[-1][0] == trained:
            runs[-1][1].append(token)
        else:
            runs.append((trained, [token]))
    return [
        {"text": tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False), "trained": trained}
        for trained, ids in runs
    ]


def render_preview(previews: list[dict[str, Any]], console: Any) -> None:
    """Print previews with rich: trained text bold green, context dim, a header per example."""
    from rich.rule import Rule
    from rich.text import Text

    console.print(Text.assemble(("trained", "bold green"), "  ", ("context (not trained)", "dim")))
    for preview in previews:
        header = f"line {preview['line']} · {preview['n_tokens']} tokens · {preview['n_trained']} trained"
        if preview["truncated"]:
            header += f" · TRUNCATED from {preview['n_tokens_full']}"
        console.print(Rule(header, style="red" if preview["truncated"] else "cyan"))
        body = Text()
        for segment in preview["segments"]:
            body.append(segment["text"], style="bold green" if segment["trained"] else "dim")
        console.print(body)
    if not previews:
        console.print("no examples")
