"""Documents for synthetic data: reading PDF, Markdown and text, and cutting them into chunks
that fit a model's context window, counted in that model's tokens.

Owns: the document readers, the token counter, the chunker. Does not own: what is asked about a
chunk (synthesis/synthesize.py).

Tokens are counted with the model's own tokenizer when it can be loaded here without a network:
the built-in models (SmolLM2, the tiny test model), a local model directory, a hub model already
in the Hugging Face cache, or the base of a tuneserve fine-tuned name (`ft:BASE:...`). Otherwise
the count is an approximation, 4 characters per token (the usual rule of thumb for English text
with BPE tokenizers; code and other languages run denser), and the context window defaults to
4096 tokens unless given.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

SUFFIXES = {".pdf": "pdf", ".md": "markdown", ".markdown": "markdown", ".txt": "text", ".text": "text"}
CHARS_PER_TOKEN = 4
DEFAULT_CONTEXT_WINDOW = 4096
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


class DocumentError(ValueError):
    """A document cannot be read; the message names the file."""


@dataclass(frozen=True)
class Document:
    name: str  # the path as given (or found under a given directory)
    text: str


@dataclass(frozen=True)
class TokenCounter:
    count: Callable[[str], int]
    context_window: int
    method: str  # "tokenizer (MODEL)" or "approximation (4 characters per token)", for the summary


# --- reading ------------------------------------------------------------------------------------


def find_documents(paths: list[Path]) -> list[Path]:
    """The readable files among `paths`: files as given, directories searched recursively (sorted).

    A file given by name with an unsupported suffix is an error; in a directory it is skipped.
    """
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(p for p in sorted(path.rglob("*")) if p.is_file() and p.suffix.lower() in SUFFIXES)
        elif path.is_file():
            if path.suffix.lower() not in SUFFIXES:
                raise DocumentError(
                    f"{path}: unsupported document type {path.suffix or '(none)'!r}; "
                    f"use PDF, Markdown or text ({', '.join(SUFFIXES)})"
                )
            found.append(path)
        else:
            raise DocumentError(f"{path}: no such file or directory")
    return found


def read_document(path: Path) -> Document:
    """One document's text. PDF through pypdf (page texts joined); Markdown and text as UTF-8."""
    kind = SUFFIXES.get(path.suffix.lower())
    if kind == "pdf":
        return Document(str(path), _read_pdf(path))
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DocumentError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    return Document(str(path), text.replace("\r\n", "\n"))


def _read_pdf(path: Path) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(path)
        if reader.is_encrypted and not reader.decrypt(""):
            raise DocumentError(f"{path}: the PDF is encrypted with a password")
        pages = [(page.extract_text() or "").strip() for page in reader.pages]
    except DocumentError:
        raise
    except (PdfReadError, OSError, ValueError, KeyError, TypeError) as exc:  # pypdf raises several for damaged files
        raise DocumentError(f"{path}: not a readable PDF ({type(exc).__name__}: {exc})") from None
    return "\n\n".join(p for p in pages if p)


# --- counting -----------------------------------------------------------------------------------


def approximate_counter(context_window: int | None = None) -> TokenCounter:
    return TokenCounter(
        lambda text: math.ceil(len(text) / CHARS_PER_TOKEN),
        context_window or DEFAULT_CONTEXT_WINDOW,
        f"approximation ({CHARS_PER_TOKEN} characters per token)",
    )


def token_counter(model: str, context_window: int | None = None) -> TokenCounter:
    """The model's tokenizer when it loads offline (see the module docstring), else the approximation."""
    tokenizer = _local_tokenizer(model)
    if tokenizer is None:
        return approximate_counter(context_window)
    window = context_window or _context_window(tokenizer) or DEFAULT_CONTEXT_WINDOW
    return TokenCounter(
        lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"]), window, f"tokenizer ({_base_of(model)})"
    )


def _base_of(model: str) -> str:
    """ft:BASE:project:suffix:id (and its checkpoints) are counted with BASE's tokenizer."""
    return model.split(":")[1] if model.startswith("ft:") and model.count(":") >= 4 else model


def _local_tokenizer(model: str):
    from tuneserve.models import BUILTIN_SMOLLM2, TINY_RANDOM, ModelNotFound

    base = _base_of(model)
    try:
        from transformers import AutoTokenizer

        if base in (BUILTIN_SMOLLM2, TINY_RANDOM) or Path(base).expanduser().is_dir():
            from tuneserve.models import load_tokenizer  # resolves through the model cache, offline

            return load_tokenizer(base)
        # Any other name: only what is already in the Hugging Face cache; never a download just to count.
        return AutoTokenizer.from_pretrained(base, local_files_only=True)
    except (ModelNotFound, OSError, ValueError, ImportError):
        return None


def _context_window(tokenizer) -> int | None:
    length = getattr(tokenizer, "model_max_length", None)
    return int(length) if isinstance(length, int) and 0 < length < 10_000_000 else None


# --- chunking -----------------------------------------------------------------------------------


def chunk_text(text: str, max_tokens: int, count: Callable[[str], int]) -> list[str]:
    """Cut text into chunks of at most about `max_tokens` tokens, on the largest boundary that fits.

    Paragraphs are packed together while they fit; a paragraph too long alone is cut at lines,
    a line at sentences, a sentence at words, a word at characters. Counts of the pieces
    are added up (joining rarely adds a token), so each piece is tokenized once.
    """
    if max_tokens < 1:
        raise ValueError("max_tokens must be at least 1")
    pieces = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    return _pack(pieces, "\n\n", max_tokens, count, _split_lines)


def _pack(pieces: list[str], joiner: str, max_tokens: int, count: Callable[[str], int], split_further) -> list[str]:
    chunks: list[str] = []
    current: list[str] = []
    used = 0
    for piece in pieces:
        size = count(piece)
        if size > max_tokens:  # too big alone: flush, then cut it finer
            if current:
                chunks.append(joiner.join(current))
                current, used = [], 0
            chunks.extend(split_further(piece, max_tokens, count))
            continue
        if current and used + size + 1 > max_tokens:
            chunks.append(joiner.join(current))
            current, used = [], 0
        current.append(piece)
        used += size + (1 if len(current) > 1 else 0)
    if current:
        chunks.append(joiner.join(current))
    return chunks


def _split_lines(text: str, max_tokens: int, count: Callable[[str], int]) -> list[str]:
    return _pack([line for line in text.split("\n") if line.strip()], "\n", max_tokens, count, _split_sentences)


def _split_sentences(text: str, max_tokens: int, count: Callable[[str], int]) -> list[str]:
    return _pack([s for s in _SENTENCE_END.split(text) if s], " ", max_tokens, count, _split_words)


def _split_words(text: str, max_tokens: int, count: Callable[[str], int]) -> list[str]:
    return _pack(text.split(), " ", max_tokens, count, _split_chars)


def _split_chars(text: str, max_tokens: int, count: Callable[[str], int]) -> list[str]:
    step = max(1, len(text) * max_tokens // max(1, count(text)))
    return [text[i : i + step] for i in range(0, len(text), step)]
