"""Documents for synthesis: reading PDF (pypdf), Markdown and text; counting tokens with the model's
tokenizer (or the documented approximation); cutting chunks that fit."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuneserve.synthesis.documents import (
    DocumentError,
    approximate_counter,
    chunk_text,
    find_documents,
    read_document,
    token_counter,
)


def make_pdf(pages: list[str]) -> bytes:
    """A minimal, valid PDF with one line of Helvetica text per page (offsets computed, xref exact)."""
    n = len(pages)
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{' '.join(f'{4 + 2 * i} 0 R' for i in range(n))}] /Count {n} >>",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    for i, text in enumerate(pages):
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET"
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
            f"/Contents {5 + 2 * i} 0 R >>"
        )
        objects.append(f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream")
    out, offsets = b"%PDF-1.4\n", []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{o:010d} 00000 n \n" for o in offsets).encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


@pytest.fixture(scope="module")
def tiny_counter(tiny_model_ready):
    return token_counter("tuneserve/tiny-random")


def test_pdf_pages_are_read_in_order(tmp_path):
    path = tmp_path / "manual.pdf"
    path.write_bytes(make_pdf(["Albedo measures reflection.", "A black body absorbs all light."]))
    text = read_document(path).text
    assert "Albedo measures reflection." in text and "A black body absorbs all light." in text
    assert text.index("Albedo") < text.index("black body")


def test_a_damaged_pdf_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "broken.pdf"
    path.write_bytes(b"%PDF-1.4\nthis is not a pdf body")
    with pytest.raises(DocumentError, match="broken.pdf"):
        read_document(path)


def test_markdown_and_text_are_read_as_utf8(tmp_path):
    (tmp_path / "notes.md").write_text("# Title\n\nCafé *au lait*.\r\n", encoding="utf-8-sig")  # BOM and CRLF
    assert read_document(tmp_path / "notes.md").text == "# Title\n\nCafé *au lait*.\n"
    (tmp_path / "latin.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(DocumentError, match=r"latin.txt: not UTF-8"):
        read_document(tmp_path / "latin.txt")


def test_directories_are_searched_recursively_and_unsupported_files_refused_by_name(tmp_path):
    (tmp_path / "docs" / "sub").mkdir(parents=True)
    for name in ("docs/b.md", "docs/a.txt", "docs/sub/c.pdf", "docs/skip.docx", "docs/image.png"):
        (tmp_path / name).write_text("x")
    found = find_documents([tmp_path / "docs"])
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["docs/a.txt", "docs/b.md", "docs/sub/c.pdf"]
    with pytest.raises(DocumentError, match="unsupported document type '.docx'"):
        find_documents([tmp_path / "docs" / "skip.docx"])
    with pytest.raises(DocumentError, match="no such file"):
        find_documents([tmp_path / "missing.txt"])


def test_the_models_tokenizer_counts_and_sets_the_window(tiny_counter):
    from transformers import AutoTokenizer

    from tuneserve.models import TINY_RANDOM, resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(TINY_RANDOM))
    text = "Anarchism calls for the abolition of the state."
    assert tiny_counter.count(text) == len(tokenizer(text, add_special_tokens=False)["input_ids"])
    assert tiny_counter.context_window == 2048 and tiny_counter.method == "tokenizer (tuneserve/tiny-random)"
    fine_tuned = token_counter("ft:tuneserve/tiny-random:default:hints:abc123")
    assert fine_tuned.method == tiny_counter.method and fine_tuned.count(text) == tiny_counter.count(text)
    assert token_counter("tuneserve/tiny-random", context_window=512).context_window == 512


def test_an_unknown_model_falls_back_to_the_documented_approximation(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    counter = token_counter("some-vendor/remote-only-model")
    assert counter.method == "approximation (4 characters per token)"
    assert counter.context_window == 4096 and counter.count("x" * 9) == 3
    assert token_counter("gpt-4o-mini", context_window=128000).context_window == 128000


def test_chunks_fit_keep_every_word_in_order_and_prefer_paragraphs(tiny_counter):
    paragraphs = [f"Paragraph {i} tells about the river and the old mill near the town." for i in range(12)]  # 16 tokens each
    text = "\n\n".join(paragraphs)
    chunks = chunk_text(text, 60, tiny_counter.count)
    assert len(chunks) > 1
    assert all(tiny_counter.count(c) <= 60 for c in chunks)
    assert " ".join(" ".join(chunks).split()) == " ".join(text.split())  # nothing lost, nothing reordered
    # Whole paragraphs, packed: each fits alone, so none is split, and three fit in 60 tokens.
    assert all(p in paragraphs for c in chunks for p in c.split("\n\n"))
    assert [len(c.split("\n\n")) for c in chunks] == [3, 3, 3, 3]


def test_too_long_pieces_are_cut_at_sentences_then_words_then_characters():
    counter = approximate_counter()  # 4 characters per token
    sentences = "First sentence is here. Second one follows it. Third closes the line."
    chunks = chunk_text(sentences, 8, counter.count)
    assert chunks == ["First sentence is here.", "Second one follows it.", "Third closes the line."]
    words = chunk_text("alpha beta gamma delta epsilon zeta", 3, counter.count)
    assert all(counter.count(c) <= 3 for c in words) and " ".join(words) == "alpha beta gamma delta epsilon zeta"
    long_word = chunk_text("x" * 50, 5, counter.count)
    assert "".join(long_word) == "x" * 50 and all(len(c) <= 20 for c in long_word)
    with pytest.raises(ValueError):
        chunk_text("text", 0, counter.count)


def test_lines_are_a_boundary_inside_a_long_paragraph():
    counter = approximate_counter()
    text = "\n".join(f"Article {i} is about topic {i}." for i in range(6))  # one paragraph, six lines
    chunks = chunk_text(text, 20, counter.count)
    assert all(counter.count(c) <= 20 for c in chunks)
    assert all(line.startswith("Article") for c in chunks for line in c.split("\n"))
    assert sum(len(c.split("\n")) for c in chunks) == 6


def test_blank_text_has_no_chunks(tiny_counter):
    assert chunk_text(" \n\n \n", 100, tiny_counter.count) == []


def test_the_sample_wiki_excerpt_chunks_within_budget(tiny_counter):
    text = read_document(Path(__file__).resolve().parents[2] / "e2e" / "data" / "wiki_excerpt.txt").text
    chunks = chunk_text(text, 200, tiny_counter.count)
    assert len(chunks) >= 2 and all(tiny_counter.count(c) <= 200 for c in chunks)
