"""Containers of training records: JSONL, one JSON array, Parquet.

Owns: sniffing which container a file is and yielding (line or item number, value) from it, with
errors that name the line (bad bytes, broken JSON). Does not own: what a record means (formats.py).

Containers, chosen by content, not by name:
  Parquet     the magic bytes "PAR1" (pyarrow; rows become dicts; a null column value counts as absent).
  JSON array  the first non-blank character is "[". The array is loaded whole (one `json.loads`):
              record numbers are item numbers. JSON arrays are the small-data container (alpaca,
              LLaMA-Factory); large data comes as JSONL or Parquet, which stream.
  JSONL       anything else: one JSON object per line, blank lines skipped, numbers are line numbers.
  A name ending .jsonl / .json / .parquet that disagrees with the content is a `container_mismatch`
  warning, not an error: we read both JSON containers, so refusing would only annoy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from tuneserve.data.records import DataError, DataWarning, Warn

CONTAINERS = ("jsonl", "json", "parquet")
EXTENSIONS = {".jsonl": "jsonl", ".json": "json", ".parquet": "parquet"}
_SNIFF = 4096
_BOM = b"\xef\xbb\xbf"


def clip(text: str, limit: int) -> str:
    """Error messages never echo a huge value."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def open_records(path: str | Path, *, warn: Warn | None = None, name: str | None = None) -> tuple[str, Iterator[tuple[int, Any]]]:
    """Sniff the container and return it with an iterator of (line or item number, value).

    File-level problems found by sniffing (empty, binary, UTF-16) raise DataError now; the rest
    (broken JSON, bad bytes further on) raise from the iterator, naming the line. `name` is the
    file's name as the user gave it, for the extension check (default: the path's own name).
    """
    path = Path(path)
    warn = warn or (lambda w: None)
    with path.open("rb") as f:
        head = f.read(_SNIFF)
        first = _first_non_blank(f, head)
    if head.startswith(b"PAR1"):
        container = "parquet"
    else:
        if first is None:
            raise DataError("the file is empty", code="empty_file")
        if head.startswith((b"\xff\xfe", b"\xfe\xff")):
            raise DataError("the file is UTF-16 encoded; save it as UTF-8", code="invalid_file_encoding")
        if b"\x00" in head:
            raise DataError("the file is binary, not UTF-8 JSON text (nor Parquet)", code="invalid_file_encoding")
        if head.startswith(_BOM):
            warn(DataWarning(1, "utf8_bom", "the file starts with a UTF-8 byte order mark; it was skipped"))
        container = "json" if first == b"[" else "jsonl"
    expected = EXTENSIONS.get(Path(name or path.name).suffix.lower())
    if expected and expected != container:
        warn(
            DataWarning(
                None,
                "container_mismatch",
                f"the file is named {expected.upper()} but holds {_CONTAINER_NAMES[container]}; read as {container}",
            )
        )
    reader = {"parquet": _read_parquet, "json": _read_json_array, "jsonl": _read_jsonl}[container]
    return container, reader(path)


_CONTAINER_NAMES = {"parquet": "Parquet", "json": "one JSON array", "jsonl": "JSON lines"}


def _first_non_blank(f: Any, head: bytes) -> bytes | None:
    """The first byte that is not whitespace (after a BOM), reading on past the sniff if needed."""
    chunk = head.removeprefix(_BOM)
    while chunk:
        stripped = chunk.lstrip()
        if stripped:
            return stripped[:1]
        chunk = f.read(1 << 20)
    return None


def read_records(path: Path) -> Iterator[tuple[int, Any]]:
    """Yield (line or item number, parsed value) from a JSONL, JSON array or Parquet file.

    Raises DataError for an empty or binary file, undecodable bytes or broken JSON, naming the line.
    """
    return open_records(path)[1]


def _decode(raw: bytes, line: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"not valid UTF-8 (byte {exc.start + 1} of the line is 0x{raw[exc.start]:02x})",
            line=line,
            code="invalid_file_encoding",
        ) from None


def _read_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            if number == 1:
                raw = raw.removeprefix(_BOM)
            if b"\x00" in raw:
                raise DataError("binary data (NUL byte)", line=number, code="invalid_file_encoding")
            text = _decode(raw, number).strip()
            if not text:
                continue
            try:
                yield number, json.loads(text)
            except json.JSONDecodeError as exc:
                raise DataError(_json_error(exc, text), line=number, code="invalid_json") from None
            except RecursionError:
                raise DataError("invalid JSON: nested too deeply", line=number, code="invalid_json") from None


def _json_error(exc: json.JSONDecodeError, text: str) -> str:
    """The decoder's message with a column, never the line itself (which may be 10 MB)."""
    if exc.pos >= len(text) and text[:1] in "{[":
        return (
            "invalid JSON: the object is not closed on this line. Is one JSON object spread over several lines "
            "(pretty-printed)? JSONL needs each object on one line"
        )
    return f"invalid JSON: {exc.msg} (column {exc.colno})"


def _read_json_array(path: Path) -> Iterator[tuple[int, Any]]:
    raw = path.read_bytes()
    skip = len(_BOM) if raw.startswith(_BOM) else 0
    try:
        text = raw[skip:].decode("utf-8")
    except UnicodeDecodeError as exc:
        at = skip + exc.start
        line = raw[:at].count(b"\n") + 1
        raise DataError(f"not valid UTF-8 (byte 0x{raw[at]:02x})", line=line, code="invalid_file_encoding") from None
    del raw
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"invalid JSON: {exc.msg} (column {exc.colno})", line=exc.lineno, code="invalid_json") from None
    except RecursionError:
        raise DataError("invalid JSON: nested too deeply", code="invalid_json") from None
    del text
    if not isinstance(items, list):  # unreachable for a file that starts with "[", kept for safety
        raise DataError("a JSON file must hold an array of records", code="invalid_json")
    for number, item in enumerate(items, start=1):
        yield number, item


def _read_parquet(path: Path) -> Iterator[tuple[int, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        raise DataError("reading Parquet needs the pyarrow package (pip install pyarrow)", code="invalid_file_format") from None
    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=1024)
        number = 0
        for batch in batches:
            for row in batch.to_pylist():
                number += 1
                # every row has every column: a null means "absent" in this row
                yield number, {k: v for k, v in row.items() if v is not None}
    except DataError:
        raise
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise DataError(f"not a readable Parquet file: {clip(str(exc), 200)}", code="invalid_parquet") from None
