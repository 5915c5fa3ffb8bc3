"""Evaluation datasets: what each model is asked, and the reference answer it is scored against.

Owns: reading a dataset file into `EvalItem`s. Does not own: the containers (data/containers.py)
or the training formats (data/formats.py), which it reuses.

A file (JSONL, one JSON array, or Parquet) holds either
  {"question": ..., "answer": ...}   (any key casing, as llama-recipes' evalset.json writes it), or
  any training format with an assistant turn (chat, prompt/completion, alpaca, ShareGPT): the
  conversation up to its LAST assistant turn is the prompt, that turn the reference. So a
  fine-tuning job's validation file is an evaluation dataset as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneserve.data.containers import read_records
from tuneserve.data.formats import PREFERENCE_FORMATS, detect_format, normalize, unknown_format_message
from tuneserve.data.records import DataError


@dataclass(frozen=True)
class EvalItem:
    index: int  # 0-based position in the dataset
    line: int  # line (JSONL) or item (JSON array) number, for messages
    messages: tuple[dict[str, Any], ...]  # what the model is sent
    question: str  # the last user turn, for reports
    reference: str


def load_eval_items(path: str | Path, max_items: int | None = None) -> list[EvalItem]:
    """The items of a dataset file. DataError (naming the line) for anything that is not one."""
    items: list[EvalItem] = []
    for line, record in read_records(Path(path)):
        if max_items is not None and len(items) >= max_items:
            break
        items.append(_item(record, line, len(items)))
    if not items:
        raise DataError("the dataset holds no items", code="empty_file")
    return items


def _item(record: Any, line: int, index: int) -> EvalItem:
    if isinstance(record, dict):
        lowered = {str(k).strip().lower(): v for k, v in record.items()}
        if ("question" in lowered) != ("answer" in lowered) and detect_format(record) is None:
            missing = "answer" if "question" in lowered else "question"
            raise DataError(
                f'\'{missing}\' is missing: an evaluation item is {{"question", "answer"}}', line=line, code="invalid_eval_item"
            )
        if "question" in lowered and "answer" in lowered and not ({"chosen", "rejected"} & set(lowered)):
            question, answer = lowered["question"], lowered["answer"]
            for name, value in (("question", question), ("answer", answer)):
                if not isinstance(value, str) or not value.strip():
                    raise DataError(f"'{name}' must be a non-empty string", line=line, code="invalid_value")
            return EvalItem(index, line, ({"role": "user", "content": question},), question, answer)
    fmt = detect_format(record)
    if fmt is None or fmt == "text" or fmt in PREFERENCE_FORMATS:
        why = unknown_format_message(record) if fmt is None else f"a {fmt} record has no single reference answer"
        raise DataError(
            f'{why}; an evaluation item is {{"question", "answer"}} or a conversation ending in an assistant turn',
            line=line,
            code="invalid_eval_item",
        )
    example = normalize(record, fmt, line)  # an sft format: an Example
    # The weight is a training mark; the chat API does not take it.
    messages = [{**{k: v for k, v in m.items() if k != "weight"}, "content": m.get("content") or ""} for m in example.messages]
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant" and m["content"].strip()), default=None)
    users = [m for m in messages[: last or 0] if m["role"] == "user"]
    if last is None or not users:
        raise DataError(
            "no user turn followed by an assistant answer to use as the reference", line=line, code="invalid_eval_item"
        )
    return EvalItem(index, line, tuple(messages[:last]), users[-1]["content"], messages[last]["content"])
