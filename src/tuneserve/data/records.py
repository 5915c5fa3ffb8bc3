"""The canonical records every input format is normalized to, and the data error.

Three kinds of record:
  Example            a conversation in OpenAI chat shape (SFT); per-message train weight, tools.
  PreferenceExample  a prompt conversation with a chosen and a rejected assistant answer (DPO).
  TextExample        raw text, trained as it is with loss on every token (pretraining, or text
                     already written in a model's template).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal, Union

from tuneserve.errors import InvalidRequest

Kind = Literal["sft", "preference", "text"]


@dataclass(frozen=True)
class Example:
    """One conversation in OpenAI chat shape.

    `messages` are dicts with "role" (system | user | assistant | tool) and "content" (str; an
    assistant message that only calls tools may have content ""). Optional keys: "weight" (0 or 1,
    assistant only; 0 means context, not trained on), "tool_calls" (assistant, OpenAI shape),
    "tool_call_id" and "name" (tool). Every assistant message without a weight is trained on.
    `tools` are OpenAI function-tool definitions offered to the model, or ().
    """

    messages: tuple[dict[str, Any], ...]
    line: int  # 1-based line (JSONL), item number (JSON array) or row number (Parquet), for messages
    tools: tuple[dict[str, Any], ...] = ()
    kind: Kind = "sft"

    def trained_messages(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["role"] == "assistant" and m.get("weight", 1) != 0]


@dataclass(frozen=True)
class PreferenceExample:
    """A prompt (the conversation so far) and two assistant answers: the preferred and the other."""

    prompt: tuple[dict[str, Any], ...]
    chosen: dict[str, Any]
    rejected: dict[str, Any]
    line: int
    tools: tuple[dict[str, Any], ...] = ()
    kind: Kind = "preference"


@dataclass(frozen=True)
class TextExample:
    """Raw text, trained as it is."""

    text: str
    line: int
    kind: Kind = "text"


Record = Union[Example, PreferenceExample, TextExample]


class DataError(InvalidRequest, ValueError):
    """The data cannot be trained on. `line` names where (1-based), when one place is at fault."""

    def __init__(self, message: str, *, line: int | None = None, code: str = "invalid_training_file", param: str | None = None):
        self.line = line
        super().__init__(f"line {line}: {message}" if line is not None else message, param=param, code=code)


@dataclass
class DataWarning:
    """Something worth fixing that does not stop training (the report lists it)."""

    line: int | None
    code: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line is not None else self.message


Warn = Callable[[DataWarning], None]
