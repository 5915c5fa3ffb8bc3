"""Synthetic training data from documents: chunk, ask an LLM for Q&A pairs, curate, deduplicate,
write chat-format JSONL (the llama-recipes chatbot seed's data pipeline, as one command).

Owns: the pipeline and its resumable state. Does not own: reading and chunking documents
(documents.py), parsing replies (llm/replies.py), the rate limiter (rate_limit.py), or the
endpoint: any OpenAI-compatible server, tuneserve's own included, through the `openai` client.

    documents -> chunks (model tokens) -> generate (concurrent, rate-limited) -> parse
      -> drop template echoes and duplicates -> curate (judge YES/NO, optional) -> split -> write

Files, for `--output train.jsonl`:
    train.jsonl            chat-format training examples (only ever valid ones)
    train.valid.jsonl      the held-out split (--eval-split), same format
    train.summary.json     chunks, replies, generated, parsed, kept, rejected by reason
    train.synth/           state: generated.jsonl (one line per finished chunk) and curation.jsonl
                           (one line per judged pair, with the verdict and the judge's reason)
A rerun with the same settings skips every chunk and pair already in the state, so an
interrupted run resumes where it stopped; outputs are rebuilt from the state each run.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from tuneserve.atomic import write_text_atomically
from tuneserve.data.convert import validation_path
from tuneserve.synthesis.documents import TokenCounter, chunk_text, find_documents, read_document
from tuneserve.data.formats import normalize
from tuneserve.llm.replies import QAPair, parse_qa_pairs, parse_verdict
from tuneserve.synthesis.rate_limit import RateLimiter
from tuneserve.data.records import DataError
from tuneserve.data.validation import MIN_EXAMPLES

# Tokens the chat template adds around the messages; kept free in every chunk's budget.
TEMPLATE_OVERHEAD_TOKENS = 32
TOKENS_PER_QUESTION = 200  # default max_tokens per asked question: a question, a short answer, its context
JUDGE_MAX_TOKENS = 128  # a verdict and a one-sentence reason


class SynthesisError(Exception):
    """The run cannot go on (the endpoint refuses or cannot be reached); the state is kept."""


class PromptConfig(BaseModel):
    """The prompt templates (synthesis/prompts.yaml is the default; --config overrides keys)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    language: str
    system_prompt: str | None
    question_prompt_template: str
    document_template: str
    curation_prompt_template: str
    curation_user_template: str


_PLACEHOLDERS = {
    "question_prompt_template": {"num_questions": 1, "language": "English"},
    "document_template": {"document": "text"},
    "curation_prompt_template": {"language": "English"},
    "curation_user_template": {"question": "q", "answer": "a", "context": "c"},
}


def load_prompt_config(path: Path | None = None) -> PromptConfig:
    """The packaged defaults, with the keys of `path` (YAML) over them. ValueError names a bad key."""
    values = yaml.safe_load(resources.files("tuneserve.synthesis").joinpath("prompts.yaml").read_text(encoding="utf-8"))
    if path is not None:
        try:
            custom = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"{path}: cannot read the prompt config: {exc}") from None
        if not isinstance(custom, dict):
            raise ValueError(f"{path}: the prompt config must be a YAML mapping of template names to text")
        values.update(custom)
    try:
        config = PromptConfig(**values)
    except ValidationError as exc:
        error = exc.errors()[0]
        raise ValueError(f"{path}: {'.'.join(str(p) for p in error['loc'])}: {error['msg']}") from None
    for name, example in _PLACEHOLDERS.items():
        try:
            getattr(config, name).format(**example)
        except KeyError as exc:
            raise ValueError(
                f"{name} uses an unknown placeholder {{{exc.args[0]}}}; it may use "
                f"{', '.join('{' + k + '}' for k in example)} (write literal braces as {{{{ and }}}})"
            ) from None
        except (ValueError, IndexError) as exc:
            raise ValueError(f"{name}: {exc} (write literal braces as {{{{ and }}}})") from None
    return config


@dataclass
class SynthOptions:
    documents: list[Path]
    model: str
    output: Path
    questions_per_chunk: int = 3
    curate: bool = False
    judge_model: str | None = None  # default: the generating model
    eval_split: float = 0.0
    seed: int = 0
    max_tokens: int | None = None  # default: TOKENS_PER_QUESTION per question
    temperature: float = 0.7
    chunk_tokens: int | None = None  # default: what the context window leaves after the prompt and the reply
    max_chunks: int | None = None
    concurrency: int = 4
    rpm: int | None = None
    tpm: int | None = None
    config: PromptConfig = field(default_factory=load_prompt_config)


@dataclass(frozen=True)
class Chunk:
    source: str
    index: int
    text: str


def summary_path(output: Path) -> Path:
    return _sibling(output, ".summary.json")


def state_dir(output: Path) -> Path:
    return _sibling(output, ".synth")


def synthesize(
    options: SynthOptions,
    client: Any,
    counter: TokenCounter,
    *,
    judge_client: Any = None,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Run the pipeline; return (and write) the summary. Raises SynthesisError when the endpoint
    refuses or cannot be reached, DocumentError for an unreadable document."""
    progress = on_progress or (lambda stage, done, total: None)
    config = options.config
    max_tokens = options.max_tokens or min(TOKENS_PER_QUESTION * options.questions_per_chunk, counter.context_window // 2)
    system = config.question_prompt_template.format(num_questions=options.questions_per_chunk, language=config.language)
    budget = _chunk_budget(counter, system, config.document_template, max_tokens, options.chunk_tokens)
    documents = [read_document(p) for p in find_documents(options.documents)]
    chunks = [Chunk(d.name, i, text) for d in documents for i, text in enumerate(chunk_text(d.text, budget, counter.count))]
    chunks = chunks[: options.max_chunks] if options.max_chunks else chunks
    state = _State(state_dir(options.output))
    limiter = RateLimiter(options.rpm, options.tpm)

    def request(chunk: Chunk) -> dict[str, Any] | None:
        user = config.document_template.format(document=chunk.text)
        key = _key(options.model, system, user, max_tokens, options.temperature)
        if key in state.generated:
            return state.generated[key]
        limiter.acquire(counter.count(system) + counter.count(user) + max_tokens)
        reply = _complete(
            client, model=options.model, messages=_messages(system, user), max_tokens=max_tokens, temperature=options.temperature
        )
        if reply is None:
            return None
        return state.add(
            "generated", {"key": key, "source": chunk.source, "chunk": chunk.index, "text": chunk.text, "reply": reply}
        )

    generated = _run_all(chunks, request, options.concurrency, lambda done: progress("generate", done, len(chunks)))
    rejected: Counter[str] = Counter()
    replies = [g for g in generated if g is not None]
    parsed: list[tuple[QAPair, dict[str, Any]]] = []
    generated_count = 0
    for record in replies:
        result = parse_qa_pairs(record["reply"])
        generated_count += result.candidates
        rejected.update(result.problems)
        parsed.extend((pair, record) for pair in result.pairs)
    candidates = _select(parsed, system, rejected)

    kept = candidates
    if options.curate:
        judge_model = options.judge_model or options.model
        curation_system = config.curation_prompt_template.format(language=config.language)

        def judge(item: tuple[QAPair, dict[str, Any]]) -> dict[str, Any] | None:
            pair = item[0]
            user = config.curation_user_template.format(
                question=pair.question, answer=pair.answer, context=pair.context or item[1]["text"]
            )
            key = _key(judge_model, curation_system, user)
            if key in state.curation:
                return state.curation[key]
            limiter.acquire(counter.count(curation_system) + counter.count(user) + JUDGE_MAX_TOKENS)
            reply = _complete(
                judge_client or client,
                model=judge_model,
                messages=_messages(curation_system, user),
                max_tokens=JUDGE_MAX_TOKENS,
                temperature=0.0,
            )
            if reply is None:
                return None
            verdict, reason = parse_verdict(reply)
            return state.add(
                "curation",
                {
                    "key": key,
                    "question": pair.question,
                    "answer": pair.answer,
                    "verdict": verdict,
                    "reason": reason,
                    "judge_model": judge_model,
                    "reply": reply,
                },
            )

        verdicts = _run_all(candidates, judge, options.concurrency, lambda done: progress("curate", done, len(candidates)))
        kept = []
        for item, verdict in zip(candidates, verdicts):
            if verdict is None:
                rejected["judge_failed"] += 1
            elif verdict["verdict"] == "YES":
                kept.append(item)
            else:
                rejected["judge_no" if verdict["verdict"] == "NO" else "judge_unparseable"] += 1

    examples = _examples([pair for pair, _ in kept], config.system_prompt, rejected)
    train, held_out = _split(examples, options.eval_split, options.seed)
    summary = {
        "documents": len(documents),
        "chunks": len(chunks),
        "chunk_tokens": budget,
        "token_count": counter.method,
        "replies": len(replies),
        "failed_requests": len(chunks) - len(replies),
        "generated": generated_count,
        "parsed": len(parsed),
        "curated": options.curate,
        "kept": len(examples),
        "train": len(train),
        "eval": len(held_out),
        "rejected": dict(sorted(rejected.items())),
        "output": None,
        "eval_output": None,
    }
    summary.update(_write_outputs(options.output, train, held_out))
    summary["usable"] = bool(examples)
    summary["message"] = _message(summary, options.model)
    write_text_atomically(summary_path(options.output), json.dumps(summary, indent=2) + "\n")
    return summary


# --- steps --------------------------------------------------------------------------------------


def _chunk_budget(counter: TokenCounter, system: str, document_template: str, max_tokens: int, chunk_tokens: int | None) -> int:
    """Tokens of document per chunk: the window less the prompt, the reply and the template (as the
    seed computes it), never below a tenth of the window; --chunk-tokens may only lower it."""
    prompt = counter.count(system) + counter.count(document_template.format(document="")) + TEMPLATE_OVERHEAD_TOKENS
    budget = max(counter.context_window - prompt - max_tokens, counter.context_window // 10)
    return max(1, min(budget, chunk_tokens) if chunk_tokens else budget)


def _select(parsed: list[tuple[QAPair, dict[str, Any]]], system: str, rejected: Counter) -> list[tuple[QAPair, dict[str, Any]]]:
    """Drop pairs copied from the prompt's example and duplicates (same question, normalized)."""
    template = _norm(system)
    placeholders = {_norm(q) for q in re.findall(r'"([^"\n]*)"', system)} | {""}
    seen: set[str] = set()
    selected = []
    for pair, record in parsed:
        question, answer = _norm(pair.question), _norm(pair.answer)
        if question in placeholders or answer in placeholders or (len(question) >= 12 and question in template):
            rejected["template_echo"] += 1
        elif question in seen:
            rejected["duplicate"] += 1
        else:
            seen.add(question)
            selected.append((pair, record))
    return selected


def _examples(pairs: list[QAPair], system_prompt: str | None, rejected: Counter) -> list[dict[str, Any]]:
    """Chat-format records, each checked by the same code that checks uploads."""
    examples = []
    for line, pair in enumerate(pairs, start=1):
        messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
            {"role": "user", "content": pair.question},
            {"role": "assistant", "content": pair.answer},
        ]
        record = {"messages": messages}
        try:
            normalize(record, "chat", line)
        except DataError:
            rejected["invalid_record"] += 1
            continue
        examples.append(record)
    return examples


def _split(examples: list[dict[str, Any]], share: float, seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    if share <= 0 or len(examples) < 2:
        return examples, []
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_eval = min(len(examples) - 1, max(1, round(len(examples) * share)))
    held = set(order[:n_eval])
    return [e for i, e in enumerate(examples) if i not in held], [e for i, e in enumerate(examples) if i in held]


def _write_outputs(output: Path, train: list[dict[str, Any]], held_out: list[dict[str, Any]]) -> dict[str, Any]:
    """Write what is usable; remove what an earlier run left that this run would not write."""
    written: dict[str, Any] = {}
    for path, records, key in ((output, train, "output"), (validation_path(output), held_out, "eval_output")):
        if records:
            write_text_atomically(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
            written[key] = str(path)
        else:
            path.unlink(missing_ok=True)
    return written


def _message(summary: dict[str, Any], model: str) -> str:
    if summary["usable"]:
        text = f"wrote {summary['train']} training examples to {summary['output']}"
        if summary["eval"]:
            text += f" and {summary['eval']} held-out examples to {summary['eval_output']}"
        if summary["kept"] < MIN_EXAMPLES:
            text += f" (a fine-tuning job needs at least {MIN_EXAMPLES} examples)"
        return text
    if not summary["chunks"]:
        return f"nothing usable: the {summary['documents']} document(s) hold no text. No training file was written."
    reasons = ", ".join(f"{k}: {v}" for k, v in summary["rejected"].items()) or "no replies"
    return (
        f"nothing usable: {model} gave {summary['replies']} replies for {summary['chunks']} chunks and no Q&A pair "
        f"survived ({reasons}). No training file was written. Try a larger model, fewer --questions-per-chunk, "
        "or simpler prompts (--config)."
    )


# --- requests -----------------------------------------------------------------------------------


def _messages(system: str, user: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def _complete(client: Any, **request: Any) -> str | None:
    """The reply's text; None when this request failed after the client's retries (the item is
    retried on the next run). An endpoint that refuses every request stops the run instead."""
    import openai

    try:
        response = client.chat.completions.create(**request)
    except (openai.APIConnectionError, openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError) as exc:
        raise SynthesisError(_describe(exc)) from exc
    except openai.APIError:
        return None
    if not response.choices:
        return ""
    return response.choices[0].message.content or ""


def _describe(exc: Exception) -> str:
    import openai

    if isinstance(exc, openai.APIConnectionError):
        return f"cannot reach the endpoint: {exc}"
    body = getattr(exc, "body", None)
    message = (body.get("message") if isinstance(body, dict) else None) or str(exc)
    return f"the endpoint refused the request ({getattr(exc, 'status_code', '?')}): {message}"


def _run_all(items: list, work: Callable[[Any], Any], concurrency: int, on_done: Callable[[int], None]) -> list:
    """work(item) for every item, `concurrency` at a time; results in item order. A SynthesisError
    stops what has not started and is raised once the running ones finish."""
    results: list[Any] = [None] * len(items)
    fatal: list[SynthesisError] = []

    def guarded(i: int) -> None:
        if not fatal:
            try:
                results[i] = work(items[i])
            except SynthesisError as exc:
                fatal.append(exc)

    on_done(0)
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        for done, _ in enumerate(as_completed([pool.submit(guarded, i) for i in range(len(items))]), start=1):
            on_done(done)
    if fatal:
        raise fatal[0]
    return results


# --- state and files ----------------------------------------------------------------------------


class _State:
    """Append-only JSONL records, by key; a torn last line (a crash mid-write) is ignored."""

    def __init__(self, directory: Path):
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.generated = self._load("generated")
        self.curation = self._load("curation")
        self._lock = threading.Lock()

    def _load(self, name: str) -> dict[str, dict[str, Any]]:
        records: dict[str, dict[str, Any]] = {}
        path = self.directory / f"{name}.jsonl"
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(record, dict) and "key" in record:
                    records[record["key"]] = record
        return records

    def add(self, name: str, record: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            with (self.directory / f"{name}.jsonl").open("a", encoding="utf-8") as f:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())
            getattr(self, name)[record["key"]] = record
        return record


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()[:32]


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def _sibling(output: Path, suffix: str) -> Path:
    name = output.name
    for ending in (".jsonl", ".json"):
        if name.endswith(ending) and len(name) > len(ending):
            name = name[: -len(ending)]
            break
    return output.with_name(name + suffix)
