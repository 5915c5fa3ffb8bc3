"""With API keys on, the console asks for a key once, keeps it in the browser, and sends it with
every API request (fetch, the upload and the chat stream alike)."""

from __future__ import annotations

import pytest

from tests.api.test_auth import create_key
from tests.conftest import chat_jsonl, start_server
from tests.ui.conftest import WIDE, watch

pytestmark = pytest.mark.ui


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory, tiny_model_ready):
    data_dir = tmp_path_factory.mktemp("ui-keys") / "data"
    data_dir.mkdir(parents=True)
    key = create_key(data_dir, "console")
    server = start_server(data_dir)
    yield server, key
    server.stop()


def test_the_console_asks_for_the_key_and_sends_it(playwright_browser, keyed_server, artifacts):
    server, key = keyed_server
    server.client(key).files.create(file=("keyed.jsonl", chat_jsonl(10)), purpose="fine-tune")
    context = playwright_browser.new_context(viewport=WIDE)
    page = context.new_page()
    console = watch(page, server.base_url)
    # The first request has no key: the server says 401 once, and Chromium logs that answer.
    console.allow(r"status of 401")
    console.allow(r"HTTP 401: GET .*/v1/files")
    sent_keys = []
    page.on("request", lambda r: sent_keys.append(r.headers.get("authorization")) if "/v1/" in r.url else None)
    try:
        page.goto(f"{server.base_url}/#/files")
        dialog = page.wait_for_selector("#key-dialog[open]")
        assert "Incorrect API key" in dialog.inner_text() or "Missing API key" in dialog.inner_text()
        page.screenshot(path=artifacts / "key-dialog-1280.png")
        page.fill("#key-input", key)
        page.click("#key-dialog button[value=save]")
        page.wait_for_selector("text=keyed.jsonl")
        assert page.evaluate("localStorage.getItem('tuneserve.apiKey')") == key
        assert page.inner_text("#key-button") == "API key ✓"

        page.reload()  # the key is remembered: no dialog, no 401
        page.wait_for_selector("text=keyed.jsonl")
        assert page.locator("#key-dialog[open]").count() == 0
        page.set_input_files(
            "#upload-input", files=[{"name": "with-key.jsonl", "mimeType": "application/jsonl", "buffer": chat_jsonl(10)}]
        )
        page.wait_for_selector("#file-detail-h:has-text('with-key.jsonl')")
        assert [f.filename for f in server.client(key).files.list()].count("with-key.jsonl") == 1
        assert sent_keys[0] is None and sent_keys[-1] == f"Bearer {key}"
        assert sum(1 for k in sent_keys if k is None) == 1  # only the very first request went without it
    finally:
        context.close()
    assert not console.unexpected(), "\n".join(console.unexpected())
