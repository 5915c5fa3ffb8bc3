"""Converting a training file from any supported format to chat, prompt-completion or alpaca JSONL.

Owns: `convert_file` (`tuneserve data convert IN OUT --to ... [--system S] [--split F]`): the
mapping from canonical records (data/records.py) to each target's JSON shape, the optional
seeded validation split, atomic writes. Does not own: reading or detecting input formats
(data/formats.py does; this module only sees the records it yields) or validation reports.

What each target can hold (a record it cannot hold raises DataError naming its line, or is
skipped and counted with `skip_unconvertible=True`):

  chat               {"messages": [...], "tools"?: [...]}: any conversation, exactly as normalized
                     (weights, tool calls and tools kept). A preference pair is written in OpenAI's
                     preference shape {"input": {"messages", "tools"?}, "preferred_output": [chosen],
                     "non_preferred_output": [rejected]}.
  prompt-completion  {"prompt", "completion"}: single-turn only, i.e. [system?] user assistant with
                     no tools. Multi-turn conversations are refused, not flattened: a flattened
                     "user: ... assistant: ..." prompt would be read back as one user turn and
                     rendered through the chat template in a shape the model never sees at serving
                     time, and every earlier assistant turn would silently stop being trained.
                     Use --to chat (or alpaca, whose `history` holds earlier turns) for those. A
                     system message has no slot of its own here: it is prepended to the prompt,
                     separated by a blank line.
  alpaca             {"instruction", "input", "output", "system"?, "history"?}: [system?] then
                     user/assistant pairs, the last pair being instruction/output, the earlier ones
                     `history`. `input` is always "" (a user turn is one string; alpaca's own
                     "instruction\\n\\ninput" is what formats.py makes of it, so it round-trips).
                     Refused: tools, tool calls, tool messages, turns out of order, weight 0 turns
                     (alpaca trains every output, history included).

Raw text records convert to none of them: they are trained as they are, with no roles to map.
Preference pairs convert only to chat (the other two have no place for the rejected answer).

The output is always JSONL (alpaca too; formats.py reads alpaca JSONL). `--split F` moves a
seeded random fraction F of the records (round(F*n), at least 1 and at most n-1) to a validation
file next to the output: OUT with a final ".jsonl"/".json" replaced by ".valid.jsonl", e.g.
train.jsonl -> train.jsonl + train.valid.jsonl. Both files keep the input order. Reading streams:
only the chosen validation indices are held in memory (the input is read twice when splitting:
once to count, once to write). Both outputs are written to temporary files and renamed into
place at the end, so a failed conversion leaves no partial output.
"""

from __future__ import annotations

import json
import os
import random
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal

from tuneserve.data.formats import iter_examples
from tuneserve.data.records import DataError, Example, PreferenceExample, Record, TextExample

Target = Literal["chat", "prompt-completion", "alpaca"]
TARGETS: tuple[str, ...] = ("chat", "prompt-completion", "alpaca")
MAX_SKIPPED_LINES = 20  # how many skipped line numbers the summary lists


def convert_file(
    src: Path,
    dst: Path,
    *,
    to: Target,
    system: str | None = None,
    split: float | None = None,
    seed: int = 0,
    skip_unconvertible: bool = False,
) -> dict[str, Any]:
    """Convert `src` (any supported format) to JSONL of format `to` at `dst`.

    `system` adds a system message, or replaces the existing one (prompt-completion: prepended to
    the prompt). `split` (0 < split < 1) carves a seeded random validation part into
    `validation_path(dst)`. `skip_unconvertible` skips records the target cannot hold instead of
    raising. Returns {"written", "validation_written", "skipped", "skipped_lines", "out", "valid_out"}.
    Raises DataError (naming the line) for bad input or a record the target cannot hold, ValueError
    for bad arguments.
    """
    src, dst = Path(src), Path(dst)
    if to not in TARGETS:
        raise ValueError(f"unknown target format {to!r}; expected one of {', '.join(TARGETS)}")
    if split is not None and not 0 < split < 1:
        raise ValueError(f"split must be a fraction between 0 and 1 (exclusive), got {split}")
    valid_dst = validation_path(dst) if split is not None else None
    for out in filter(None, (dst, valid_dst)):
        if out.resolve() == src.resolve():
            raise ValueError(f"the output {out} would overwrite the input")

    valid_indices: set[int] = set()
    if split is not None:
        total = sum(1 for _ in _converted(src, to, system, skip_unconvertible, _Skipped()))
        if total < 2:
            raise DataError(f"--split needs at least 2 convertible examples, the file has {total}", code="too_few_examples")
        n_valid = min(max(round(total * split), 1), total - 1)
        valid_indices = set(random.Random(seed).sample(range(total), n_valid))

    skipped = _Skipped()
    written = validation_written = 0
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(dst)
    valid_tmp = _tmp_path(valid_dst) if valid_dst is not None else None
    try:
        with ExitStack() as files:
            out = files.enter_context(tmp.open("w", encoding="utf-8"))
            valid = files.enter_context(valid_tmp.open("w", encoding="utf-8")) if valid_tmp is not None else None
            for index, obj in enumerate(_converted(src, to, system, skip_unconvertible, skipped)):
                line = json.dumps(obj, ensure_ascii=False) + "\n"
                if valid is not None and index in valid_indices:
                    valid.write(line)
                    validation_written += 1
                else:
                    out.write(line)
                    written += 1
        if written + validation_written == 0:
            if skipped.count:
                raise DataError(f"no example could be converted; the first refusal: {skipped.first[0]}", code="no_examples")
            raise DataError("the file holds no training examples", code="no_examples")
        os.replace(tmp, dst)
        if valid_tmp is not None:
            os.replace(valid_tmp, valid_dst)
    finally:
        for path in (tmp, valid_tmp):
            if path is not None:
                path.unlink(missing_ok=True)
    return {
        "written": written,
        "validation_written": validation_written,
        "skipped": skipped.count,
        "skipped_lines": [error.line for error in skipped.first],
        "out": str(dst),
        "valid_out": str(valid_dst) if valid_dst else None,
    }


def validation_path(dst: Path) -> Path:
    """Where --split writes the validation part: train.jsonl -> train.valid.jsonl (x.json, x -> x.valid.jsonl)."""
    name = dst.name
    for suffix in (".jsonl", ".json"):
        if name.endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
            break
    return dst.with_name(name + ".valid.jsonl")


def convert_record(record: Record, to: Target, system: str | None = None) -> dict[str, Any]:
    """One canonical record as a JSON object of format `to`, or DataError naming its line."""
    if isinstance(record, TextExample):
        raise DataError(
            f"raw text records cannot be converted to {to}: they have no roles to map (they are trained as they are)",
            line=record.line,
            code="unconvertible_record",
        )
    if isinstance(record, PreferenceExample):
        if to != "chat":
            raise DataError(
                f"a preference pair cannot be written as {to} (it has no place for the rejected answer); "
                "use --to chat, which writes OpenAI's preference format",
                line=record.line,
                code="unconvertible_record",
            )
        return _preference_to_chat(record, system)
    if not isinstance(record, Example):
        raise DataError(f"unknown record type {type(record).__name__}", line=getattr(record, "line", None))
    if to == "chat":
        obj: dict[str, Any] = {"messages": _with_system([dict(m) for m in record.messages], system)}
        if record.tools:
            obj["tools"] = list(record.tools)
        return obj
    if to == "prompt-completion":
        return _to_prompt_completion(record, system)
    return _to_alpaca(record, system)


@dataclass
class _Skipped:
    """How many records were skipped, and the first few refusals (bounded: the input may be huge)."""

    count: int = 0
    first: list[DataError] = field(default_factory=list)

    def add(self, error: DataError) -> None:
        self.count += 1
        if len(self.first) < MAX_SKIPPED_LINES:
            self.first.append(error)


def _converted(src: Path, to: Target, system: str | None, skip: bool, skipped: _Skipped) -> Iterator[dict[str, Any]]:
    for record in iter_examples(src):
        try:
            yield convert_record(record, to, system)
        except DataError as exc:
            if not skip or exc.code != "unconvertible_record":
                raise
            skipped.add(exc)


def _with_system(messages: list[dict[str, Any]], system: str | None) -> list[dict[str, Any]]:
    if system is None:
        return messages
    if messages and messages[0]["role"] == "system":
        return [{**messages[0], "content": system}, *messages[1:]]
    return [{"role": "system", "content": system}, *messages]


def _preference_to_chat(record: PreferenceExample, system: str | None) -> dict[str, Any]:
    conversation: dict[str, Any] = {"messages": _with_system([dict(m) for m in record.prompt], system)}
    if record.tools:
        conversation["tools"] = list(record.tools)
    return {"input": conversation, "preferred_output": [dict(record.chosen)], "non_preferred_output": [dict(record.rejected)]}


def _plain_turns(record: Example, to: str) -> tuple[str | None, list[dict[str, Any]]]:
    """(system content or None, the rest) when the conversation is [system?] (user assistant)+ of plain
    text; DataError otherwise."""

    def refuse(why: str) -> DataError:
        hint = "; use --to chat" if to == "alpaca" else "; use --to chat (or alpaca for multi-turn)"
        return DataError(f"cannot convert to {to}: {why}{hint}", line=record.line, code="unconvertible_record")

    if record.tools:
        raise refuse("the conversation offers tools")
    messages = list(record.messages)
    system = None
    if messages and messages[0]["role"] == "system":
        system, messages = messages[0]["content"], messages[1:]
    offset = 1 + (system is not None)  # 1-based numbering of the file's own messages
    for i, message in enumerate(messages):
        expected = "user" if i % 2 == 0 else "assistant"
        if message["role"] != expected:
            raise refuse(
                f"message {i + offset} is {message['role']}, expected {expected} "
                "(user/assistant pairs after an optional first system message)"
            )
        if message.get("tool_calls"):
            raise refuse("an assistant message calls tools")
        if message.get("weight", 1) == 0:
            raise refuse("an assistant message has weight 0, which the target cannot express")
        if not isinstance(message.get("content"), str):
            raise refuse(f"message {i + offset} has no text content")
    if not messages or len(messages) % 2:
        raise refuse("it must be user/assistant pairs ending with an assistant answer")
    return system, messages


def _to_prompt_completion(record: Example, system: str | None) -> dict[str, Any]:
    existing, turns = _plain_turns(record, "prompt-completion")
    if len(turns) != 2:
        raise DataError(
            f"cannot convert a multi-turn conversation ({len(turns) // 2} user/assistant pairs) to "
            "prompt-completion, which holds one prompt and one answer; use --to chat or --to alpaca",
            line=record.line,
            code="unconvertible_record",
        )
    system = existing if system is None else system
    prompt = turns[0]["content"]
    return {"prompt": f"{system}\n\n{prompt}" if system else prompt, "completion": turns[1]["content"]}


def _to_alpaca(record: Example, system: str | None) -> dict[str, Any]:
    existing, turns = _plain_turns(record, "alpaca")
    system = existing if system is None else system
    obj: dict[str, Any] = {"instruction": turns[-2]["content"], "input": "", "output": turns[-1]["content"]}
    if system:
        obj["system"] = system
    if len(turns) > 2:
        obj["history"] = [[turns[i]["content"], turns[i + 1]["content"]] for i in range(0, len(turns) - 2, 2)]
    return obj


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")
