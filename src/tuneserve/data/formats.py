"""Reading training files and normalizing every supported format to `Example`s.

Formats (detected per record by its keys; a file holds one format):
  chat               {"messages": [{"role", "content", "weight"?}, ...]}        (OpenAI)
  prompt_completion  {"prompt": str, "completion": str}                          (OpenAI legacy, OCI)
  alpaca             {"instruction", "input"?, "output", "system"?, "history"?}  (Stanford Alpaca)
A file is JSONL, or (alpaca style) one JSON array of records.

prompt_completion becomes a user turn and an assistant turn, so it trains through the chat
template: users of chat models who bring this format want the model to answer as an assistant.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from tuneserve.data.records import DataError, Example

ROLES = ("system", "user", "assistant")
FORMATS = ("chat", "prompt_completion", "alpaca")


def read_records(path: Path) -> Iterator[tuple[int, Any]]:
    """Yield (line or item number, parsed JSON value) from a JSONL file or a JSON array file.

    Raises DataError for undecodable bytes or broken JSON, naming the line.
    """
    with path.open("rb") as f:
        head = f.read(4096)
    if not head.strip():
        raise DataError("the file is empty", code="empty_file")
    if b"\x00" in head:
        raise DataError("the file is binary, not UTF-8 JSON text", code="invalid_file_encoding")
    if head.removeprefix(b"\xef\xbb\xbf").lstrip().startswith(b"["):  # a UTF-8 BOM may precede the array
        yield from _read_json_array(path)
    else:
        yield from _read_jsonl(path)


def _decode(raw: bytes, line: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"not valid UTF-8 (byte {exc.start} of the line)", line=line, code="invalid_file_encoding") from None


def _read_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            if b"\x00" in raw:
                raise DataError("binary data (NUL byte)", line=number, code="invalid_file_encoding")
            text = _decode(raw, number).strip()
            if number == 1:
                text = text.lstrip("\ufeff")
            if not text:
                continue
            try:
                yield number, json.loads(text)
            except json.JSONDecodeError as exc:
                raise DataError(f"invalid JSON: {exc.msg} (column {exc.colno})", line=number, code="invalid_json") from None


def _read_json_array(path: Path) -> Iterator[tuple[int, Any]]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8").lstrip("\ufeff")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError("not valid UTF-8", line=line, code="invalid_file_encoding") from None
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"invalid JSON: {exc.msg} (column {exc.colno})", line=exc.lineno, code="invalid_json") from None
    if not isinstance(items, list):
        raise DataError("a JSON file must hold an array of records", code="invalid_json")
    for number, item in enumerate(items, start=1):
        yield number, item


def detect_format(record: Any) -> str | None:
    """The format a record is in, or None if its keys match none."""
    if not isinstance(record, dict):
        return None
    if "messages" in record:
        return "chat"
    if "prompt" in record and "completion" in record:
        return "prompt_completion"
    if "instruction" in record and "output" in record:
        return "alpaca"
    return None


def normalize(record: dict[str, Any], fmt: str, line: int) -> Example:
    """Turn one record of format `fmt` into an Example, or raise DataError naming `line`."""
    if fmt == "chat":
        messages = _chat_messages(record["messages"], line)
    elif fmt == "prompt_completion":
        _require_strings(record, ("prompt", "completion"), line)
        messages = [{"role": "user", "content": record["prompt"]}, {"role": "assistant", "content": record["completion"]}]
    elif fmt == "alpaca":
        messages = _alpaca_messages(record, line)
    else:
        raise DataError(f"unknown format {fmt!r}", line=line, code="unknown_format")
    example = Example(messages=tuple(messages), line=line)
    if not example.trained_messages():
        raise DataError("no assistant message to train on", line=line, code="missing_assistant_message")
    if not any(m["content"].strip() for m in example.trained_messages()):
        raise DataError("every trained assistant message is empty", line=line, code="empty_assistant_message")
    return example


def _chat_messages(messages: Any, line: int) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise DataError("'messages' must be a non-empty list", line=line, code="invalid_messages")
    out = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise DataError(f"{where} must be an object", line=line, code="invalid_messages")
        role = message.get("role")
        if role not in ROLES:
            raise DataError(f"{where} has unknown role {role!r} (expected one of {', '.join(ROLES)})", line=line, code="unknown_role")
        content = message.get("content")
        if not isinstance(content, str):
            raise DataError(f"{where} needs 'content' as a string", line=line, code="invalid_content")
        normalized = {"role": role, "content": content}
        if "weight" in message:
            if role != "assistant" or message["weight"] not in (0, 1):
                raise DataError(f"{where}: 'weight' must be 0 or 1, on assistant messages only", line=line, code="invalid_weight")
            normalized["weight"] = int(message["weight"])
        out.append(normalized)
    return out


def _alpaca_messages(record: dict[str, Any], line: int) -> list[dict[str, Any]]:
    _require_strings(record, ("instruction", "output"), line)
    for key in ("input", "system"):
        if record.get(key) is not None and not isinstance(record[key], str):
            raise DataError(f"'{key}' must be a string", line=line, code="invalid_content")
    messages: list[dict[str, Any]] = []
    if record.get("system"):
        messages.append({"role": "system", "content": record["system"]})
    for turn in record.get("history") or []:
        if not (isinstance(turn, list) and len(turn) == 2 and all(isinstance(t, str) for t in turn)):
            raise DataError("'history' must be a list of [instruction, response] pairs", line=line, code="invalid_content")
        messages += [{"role": "user", "content": turn[0]}, {"role": "assistant", "content": turn[1]}]
    prompt = record["instruction"] + (f"\n\n{record['input']}" if record.get("input") else "")
    messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": record["output"]}]
    return messages


def _require_strings(record: dict[str, Any], keys: tuple[str, ...], line: int) -> None:
    for key in keys:
        if not isinstance(record.get(key), str):
            raise DataError(f"'{key}' must be a string", line=line, code="invalid_content")


def iter_examples(path: Path) -> Iterator[Example]:
    """Yield the file's Examples; the first bad record raises DataError naming its line."""
    fmt = None
    for line, record in read_records(path):
        found = detect_format(record)
        if found is None:
            raise DataError(unknown_format_message(record), line=line, code="unknown_format")
        if fmt is None:
            fmt = found
        elif found != fmt:
            raise DataError(f"record is {found} but the file started as {fmt}; use one format per file", line=line, code="mixed_formats")
        yield normalize(record, fmt, line)


def unknown_format_message(record: Any) -> str:
    if not isinstance(record, dict):
        return f"expected a JSON object, got {type(record).__name__}"
    keys = ", ".join(sorted(record)[:8]) or "none"
    return f"unknown record format (keys: {keys}); expected 'messages', 'prompt'+'completion', or 'instruction'+'output'"


def load_examples(path: str | Path) -> list[Example]:
    """All Examples of a file. Raises DataError on the first bad record, or if there are none."""
    examples = list(iter_examples(Path(path)))
    if not examples:
        raise DataError("the file holds no training examples", code="no_examples")
    return examples
