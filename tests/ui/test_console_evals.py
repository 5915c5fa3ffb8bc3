"""Evals: an evaluation started from the page is listed and shown in detail."""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.sync_api import expect

from tests.conftest import TINY

pytestmark = pytest.mark.ui


def test_an_evaluation_started_from_the_page_is_listed_and_shown(console, ui_server, seeded, artifacts):
    model = seeded["model"]
    page = console.open(f"#/evals?model={model}")
    page.wait_for_selector(f'.new-eval option[value="{seeded["file"]}"]', state="attached")
    # Opened for a fine-tuned model: it and its base are ticked.
    ticked = page.eval_on_selector_all(".new-eval .checks input:checked", "(els) => els.map((e) => e.value)")
    assert sorted(ticked) == sorted([model, TINY])
    page.select_option("#eval-dataset", seeded["file"])
    page.fill("#eval-max-tokens", "4")
    page.fill("#eval-max-items", "3")
    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/v1/evaluations")) as sent:
        page.click("button:has-text('Start evaluation')")
    body = sent.value.post_data_json
    assert body["dataset_file"] == seeded["file"] and body["max_tokens"] == 4 and body["max_items"] == 3
    page.wait_for_url(re.compile(r"#/evals/eval-"))
    eval_id = page.evaluate("location.hash.split('/')[2]")
    page.wait_for_function(
        "document.querySelector('.page-evals .badge')?.textContent.trim().toLowerCase() === 'succeeded'", timeout=120_000
    )
    summary = httpx.get(f"{ui_server.base_url}/v1/evaluations/{eval_id}").json()["summary"]
    assert len(summary) == 2
    expect(page.locator("#eval-summary-h ~ div tbody tr")).to_have_count(len(summary))
    shown = page.inner_text("#eval-summary-h ~ div")
    for name, stats in summary.items():
        assert name in shown and f"{stats['rouge1']['mean']:.3g}"[:4] in shown
    expect(page.locator(".items tbody tr")).to_have_count(3)
    page.click("text=Show the HTML report")
    frame = page.wait_for_selector("iframe.report-frame:not([hidden])")
    assert frame.get_attribute("sandbox") == "allow-scripts"
    page.evaluate("window.scrollTo(0, 0)")  # the sticky header is drawn where the page is scrolled to
    page.screenshot(path=artifacts / "evals-detail-1280.png", full_page=True)

    page = console.open("#/evals")
    page.wait_for_selector(f'[data-eval="{eval_id}"]')
    page.screenshot(path=artifacts / "evals-list-1280.png", full_page=True)
