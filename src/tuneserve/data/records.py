"""The canonical training record every input format is normalized to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Example:
    """One conversation in OpenAI chat shape.

    `messages` are dicts with "role" (system | user | assistant) and "content" (str).
    An assistant message may carry "weight": 0 or 1; 0 means it is context, not trained on.
    Every assistant message without a weight is trained on.
    """

    messages: tuple[dict[str, Any], ...]
    line: int  # 1-based line (JSONL) or item number (JSON array) it came from, for error messages

    def trained_messages(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["role"] == "assistant" and m.get("weight", 1) != 0]


class DataError(ValueError):
    """The data cannot be trained on. `line` names where (1-based), when one place is at fault."""

    def __init__(self, message: str, *, line: int | None = None, code: str = "invalid_training_file"):
        self.line = line
        self.code = code
        super().__init__(f"line {line}: {message}" if line is not None else message)
