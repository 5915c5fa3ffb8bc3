"""Files page: upload with the file picker and by drag and drop, the validation report (errors
and warnings by line), and the trained-token preview."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.conftest import chat_jsonl

pytestmark = pytest.mark.ui


def upload_with_picker(page, name: str, data: bytes):
    page.set_input_files("#upload-input", files=[{"name": name, "mimeType": "application/jsonl", "buffer": data}])


def test_upload_with_the_picker_shows_the_report_and_the_trained_tokens(console, ui_server, artifacts):
    page = console.open("#/files")
    upload_with_picker(page, "picked.jsonl", chat_jsonl(12, answer="Quillton it is."))
    page.wait_for_function("location.hash.startsWith('#/files/file-')")
    file_id = page.evaluate("location.hash.split('/')[2]")
    page.wait_for_selector("#file-detail-h:has-text('picked.jsonl')")
    report = page.inner_text(".report")
    assert "OK" in report and "chat (sft, jsonl)" in report and "12" in report
    stored = ui_server.client().files.retrieve(file_id)
    assert stored.filename == "picked.jsonl" and stored.bytes == len(chat_jsonl(12, answer="Quillton it is."))
    page.wait_for_selector(f'[data-file="{file_id}"].selected')  # the list shows it too, marked as the one open

    page.click("text=Show trained tokens")
    page.wait_for_selector(".example mark.trained", timeout=60_000)
    expect(page.locator(".example")).to_have_count(3)
    trained = page.locator(".example").first.locator("mark.trained").all_inner_texts()
    context = page.locator(".example").first.locator("pre > span").all_inner_texts()
    assert any("Quillton it is." in t for t in trained)  # the answer is trained on
    assert any("what is the capital of Zorbia?" in c for c in context)  # the question is context only
    assert not any("Zorbia?" in t for t in trained)
    page.screenshot(path=artifacts / "files-preview-1280.png", full_page=True)


def test_drag_and_drop_uploads_the_dropped_file(console, ui_server):
    page = console.open("#/files")
    text = chat_jsonl(11).decode()
    page.evaluate(
        """([name, text]) => {
        const data = new DataTransfer();
        data.items.add(new File([text], name, {type: 'application/jsonl'}));
        const zone = document.getElementById('dropzone');
        for (const type of ['dragenter', 'dragover', 'drop']) {
            zone.dispatchEvent(new DragEvent(type, {dataTransfer: data, bubbles: true, cancelable: true}));
        }
    }""",
        ["dropped.jsonl", text],
    )
    page.wait_for_selector("#file-detail-h:has-text('dropped.jsonl')")
    assert "11" in page.inner_text(".report .facts")
    names = [f.filename for f in ui_server.client().files.list()]
    assert "dropped.jsonl" in names


def test_a_rejected_upload_says_which_line_and_a_warning_shows_in_the_report(console, artifacts):
    console.allow(r"status of 400")  # Chromium logs the refused upload's answer
    console.allow(r"HTTP 400: POST .*/v1/files$")
    page = console.open("#/files")
    bad = chat_jsonl(4) + b'{"messages": [{"role": "user", "content": "no answer"}], "extra": 1}\n' + b"not json\n"
    upload_with_picker(page, "broken.jsonl", bad)
    alert = page.wait_for_selector(".upload-status .notice-error")
    message = alert.inner_text()
    assert "broken.jsonl was not accepted" in message and re.search(r"line \d+", message), message
    assert page.evaluate("location.hash") == "#/files"  # nothing was stored, so no file page
    page.screenshot(path=artifacts / "files-rejected-1280.png", full_page=True)

    upload_with_picker(page, "few.jsonl", chat_jsonl(3))
    page.wait_for_selector("#file-detail-h:has-text('few.jsonl')")
    warnings = page.inner_text(".issues-warn")
    assert "fewer_than_10_examples" in warnings and "at least 10" in warnings


def test_preview_needs_a_base_model_tokenizer(console, seeded):
    """The preview's model choices are base models only (fine-tuned names have no tokenizer of their own)."""
    page = console.open(f"#/files/{seeded['file']}")
    page.wait_for_function("document.querySelectorAll('#preview-model option').length >= 2")
    options = page.locator("#preview-model option").all_inner_texts()
    assert seeded["model"] not in options and "tuneserve/tiny-random" in options
