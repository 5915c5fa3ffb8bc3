"""Robust parsing of what an LLM writes back: Q&A pairs (synthesis) and YES/NO verdicts (judges).

Owns: turning a model's free text into pairs or a verdict, and saying why when it cannot. Does not
own: asking the model (synthesis/synthesize.py, evaluation/judge.py) or deciding what to keep.

Models, small ones above all, wrap JSON in prose and code fences, stop mid-array at max_tokens,
forget commas (the seed's own template has one missing), use single quotes, capitalize keys
("Question"), return one object instead of a list, or a list under some key. The parser accepts all
of that, never invents content, and counts every candidate it had to drop, by reason:

    >>> parse_qa_pairs('Sure! ```json\\n[{"Question": "Who?", "Answer": "Ada."}]\\n``` Hope it helps')
    QAParse(pairs=[QAPair(question='Who?', answer='Ada.', context='')], candidates=1, problems={})
"""

from __future__ import annotations

import ast
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tuneserve.data.containers import clip

QUESTION_KEYS = ("question", "q", "query", "prompt", "instruction")
ANSWER_KEYS = ("answer", "a", "response", "output", "completion")
CONTEXT_KEYS = ("context", "ctx", "source", "evidence", "passage")
VERDICT_KEYS = ("result", "verdict", "decision", "judgement", "judgment", "answer", "label", "grade")
REASON_KEYS = ("reason", "explanation", "rationale", "justification", "why")
REASON_LIMIT = 500  # a judge's reason (or the reply standing in for it) is clipped to this many characters

# Problem codes (counted in QAParse.problems and in the synthesis summary).
UNPARSEABLE = "unparseable_reply"  # no JSON (nor labeled Q/A text) in the reply at all
MISSING_QUESTION = "missing_question"  # a candidate without a usable question
MISSING_ANSWER = "missing_answer"  # a candidate without a usable answer

_FENCE = re.compile(r"```[a-zA-Z0-9_-]*[ \t]*\n?(.*?)(?:```|\Z)", re.S)
_TRAILING_COMMA = re.compile(r",\s*([\]}])")
# A string value ending a line and a new key starting the next with no comma between them.
_MISSING_COMMA = re.compile(r'("|\d|true|false|null)(\s*\n\s*)(")')
_LABELED = re.compile(
    r"(?:^|\n)[ \t]*(?:[-*]\s*)?(?:\d+[.)]\s*)?(?:\*\*)?\s*(?P<label>question|q|answer|a|context)\s*\d*\s*(?:\*\*)?\s*[:：]\s*(?:\*\*)?",
    re.I,
)


@dataclass(frozen=True)
class QAPair:
    question: str
    answer: str
    context: str = ""


@dataclass
class QAParse:
    pairs: list[QAPair] = field(default_factory=list)
    candidates: int = 0  # objects that looked like a Q&A item, usable or not
    problems: dict[str, int] = field(default_factory=dict)


def parse_qa_pairs(text: str) -> QAParse:
    """Every Q&A pair in a model's reply, with counts of what could not be used.

    Looks for JSON first (inside code fences, then anywhere in the text), repairing the usual
    slips; falls back to labeled text ("Question: ... Answer: ..."). A reply with nothing
    recognisable counts once as `unparseable_reply`.
    """
    result = QAParse()
    problems: Counter[str] = Counter()
    candidates = [c for value in _json_values(text or "") for c in _qa_candidates(value)]
    if not candidates:
        candidates = _labeled_candidates(text or "")
    if not candidates:
        problems[UNPARSEABLE] += 1
    for candidate in candidates:
        result.candidates += 1
        question = _field(candidate, QUESTION_KEYS)
        answer = _field(candidate, ANSWER_KEYS)
        if not question:
            problems[MISSING_QUESTION] += 1
        elif not answer:
            problems[MISSING_ANSWER] += 1
        else:
            result.pairs.append(QAPair(question, answer, _field(candidate, CONTEXT_KEYS)))
    result.problems = dict(problems)
    return result


def parse_verdict(text: str) -> tuple[str | None, str]:
    """(\"YES\" | \"NO\" | None, reason) from a judge's reply.

    Accepts JSON ({"Result": "yes", "Reason": ...}, any key casing, fenced or followed by prose),
    labeled lines ("Verdict: **No** - ..."), or a reply that starts with yes/no. A reply that
    names both, or echoes the template ("YES or NO"), is None: unreadable, never guessed.
    """
    text = text or ""
    for value in _json_values(text):
        if isinstance(value, list) and value and isinstance(value[0], dict):
            value = value[0]
        if isinstance(value, dict):
            verdict = _yes_no(_field(value, VERDICT_KEYS))
            if verdict is not None:
                return verdict, _field(value, REASON_KEYS) or clip(text.strip(), REASON_LIMIT)
    labeled = re.search(r"\b(?:result|verdict|decision|judge?ment|answer|grade)\s*[:=\-]\s*\**\s*\"?([A-Za-z]+)", text, re.I)
    if labeled and (verdict := _yes_no(labeled.group(1))) is not None:
        return verdict, _reason_after(text, labeled.end())
    first = re.match(r"\W*(yes|no)\b", text, re.I)
    if first and not re.match(r"\W*(yes|no)\W+(?:(?:or|and)\W+)?(yes|no)\b", text, re.I):  # "YES or NO", "yes/no"
        return first.group(1).upper(), _reason_after(text, first.end())
    return None, clip(text.strip(), REASON_LIMIT)


# --- finding JSON -----------------------------------------------------------------------------


def _json_values(text: str) -> list[Any]:
    """JSON values in the text: fenced blocks first, then the whole text; each also repaired."""
    for source in [*(m.group(1) for m in _FENCE.finditer(text)), text]:
        values = _scan(source)
        if not values:
            values = _scan(_repair(source))
        if values:
            return values
    return []


def _scan(text: str) -> list[Any]:
    """Decode every top-level JSON object or array that starts somewhere in the text.

    An array cut short (max_tokens) fails to decode as a whole; scanning on from the next "{"
    still recovers the objects inside it that are complete.
    """
    decoder = json.JSONDecoder()
    values, pos = [], 0
    while True:
        starts = [i for i in (text.find("{", pos), text.find("[", pos)) if i >= 0]
        if not starts:
            return values
        start = min(starts)
        try:
            value, end = decoder.raw_decode(text, start)
        except (json.JSONDecodeError, RecursionError):
            value = _python_literal(text, start)
            if value is None:
                pos = start + 1
                continue
            value, end = value
        if isinstance(value, (dict, list)):
            values.append(value)
        pos = max(end, start + 1)


def _python_literal(text: str, start: int) -> tuple[Any, int] | None:
    """A Python-style literal ({'question': ...}) some models write instead of JSON."""
    close = {"{": "}", "[": "]"}[text[start]]
    end = text.find(close, start)
    while end >= 0:
        try:
            value = ast.literal_eval(text[start : end + 1])
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            end = text.find(close, end + 1)
            continue
        return (value, end + 1) if isinstance(value, (dict, list)) else None
    return None


def _repair(text: str) -> str:
    """Fix the slips that break json.loads most often: trailing and missing commas."""
    text = _TRAILING_COMMA.sub(r"\1", text)
    return _MISSING_COMMA.sub(r"\1,\2\3", text)


# --- from JSON values to candidate items -------------------------------------------------------


def _qa_candidates(value: Any) -> list[dict[str, Any]]:
    """Q&A-shaped dicts in a decoded value: a list of them, one of them, or a list under any key."""
    if isinstance(value, list):
        return [c for item in value for c in _qa_candidates(item)] if any(isinstance(i, (dict, list)) for i in value) else []
    if not isinstance(value, dict):
        return []
    nested = [c for v in value.values() if isinstance(v, (list, dict)) for c in _qa_candidates(v)]
    keys = {str(k).strip().lower() for k in value}
    # A wrapper whose values hold the pairs ({"question": DOC, "answer": [pairs]}) gives its pairs.
    return [value] if keys & set(QUESTION_KEYS + ANSWER_KEYS) and not nested else nested


def _labeled_candidates(text: str) -> list[dict[str, Any]]:
    """Pairs written as labeled text: "Question: ...\\nAnswer: ...\\n(Context: ...)", repeated."""
    marks = list(_LABELED.finditer(text))
    candidates: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    for i, mark in enumerate(marks):
        label = {"q": "question", "a": "answer"}.get(mark["label"].lower(), mark["label"].lower())
        value = text[mark.end() : marks[i + 1].start() if i + 1 < len(marks) else len(text)].strip()
        if label == "question" and current:
            candidates.append(current)
            current = {}
        current[label] = value
    if current:
        candidates.append(current)
    return [c for c in candidates if "question" in c or "answer" in c]


def _field(item: dict[str, Any], names: tuple[str, ...]) -> str:
    """The first of `names` present (any key casing), as clean text; "" when absent or empty."""
    lowered = {str(k).strip().lower(): v for k, v in item.items()}
    for name in names:
        value = lowered.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str) and (cleaned := _clean(value)):
            return cleaned
    return ""


def _clean(value: str) -> str:
    return value.strip().strip("*").strip().strip('"').strip()


def _yes_no(value: str) -> str | None:
    words = re.findall(r"[a-z]+", value.lower())
    if not words or ("yes" in words and "no" in words):
        return None
    return {"yes": "YES", "no": "NO", "true": "YES", "false": "NO", "correct": "YES", "incorrect": "NO"}.get(words[0])


def _reason_after(text: str, pos: int) -> str:
    reason = text[pos:].lstrip(" \t\n*\"'.,:;-").rstrip(' \t\n*"')
    return clip(reason.strip(), REASON_LIMIT) or clip(text.strip(), REASON_LIMIT)
