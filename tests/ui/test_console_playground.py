"""Playground: chat with a model, the sampling settings reach the request, tokens are coloured by
their probability from logprobs, and a fine-tuned model answers beside its base on the same prompt."""

from __future__ import annotations

import math

import pytest
from playwright.sync_api import expect

from tests.conftest import TINY
from tests.ui.conftest import NARROW

pytestmark = pytest.mark.ui

# The playground's probability bands (playground.js BANDS): class pN for p at or above each bound.
BANDS = [(0.8, 4), (0.5, 3), (0.25, 2), (0.05, 1), (0.0, 0)]


def expected_band(logprob: float) -> int:
    p = math.exp(logprob)
    return next(band for bound, band in BANDS if p >= bound)


def answers(page, pane: int):
    return page.locator(f'.pane[data-pane="{pane}"] .msg.assistant')


def wait_for_answer(page, pane: int, count: int):
    page.wait_for_function(
        f"[...document.querySelectorAll('.pane[data-pane=\"{pane}\"] .msg.assistant .meta')]"
        f".filter((m) => m.textContent.includes('finish')).length >= {count}",
        timeout=60_000,
    )


def test_chat_streams_an_answer_with_tokens_coloured_by_likelihood(console, seeded, artifacts):
    model = seeded["model"]
    page = console.open(f"#/playground?model={model}")
    page.wait_for_function(f"document.querySelector('#pg-model-a')?.value === {model!r}")
    page.fill("#pg-system", "Answer in one word.")
    page.fill("#pg-max-tokens", "6")
    page.focus("#pg-temperature")  # the sliders work from the keyboard
    page.keyboard.press("Home")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    page.fill("#pg-prompt", "What is the capital of Zorbia?")
    with page.expect_request(lambda r: r.url.endswith("/v1/chat/completions")) as sent:
        page.press("#pg-prompt", "Enter")
    body = sent.value.post_data_json
    assert body["model"] == model and body["stream"] is True and body["max_tokens"] == 6
    assert body["temperature"] == pytest.approx(0.1) and body["top_p"] == 1
    assert body["messages"] == [
        {"role": "system", "content": "Answer in one word."},
        {"role": "user", "content": "What is the capital of Zorbia?"},
    ]
    assert body["logprobs"] is True and body["top_logprobs"] == 5
    wait_for_answer(page, 0, 1)

    tokens = answers(page, 0).first.locator(".tok")
    n = tokens.count()
    assert 1 <= n <= 6  # max_tokens from the form
    for i in range(n):
        token = tokens.nth(i)
        logprob = float(token.get_attribute("data-logprob"))
        assert logprob <= 0
        assert f"p{expected_band(logprob)}" in token.get_attribute("class").split()
        assert "alternatives" in token.get_attribute("title")  # top_logprobs in the tooltip
        colour = token.evaluate("(el) => getComputedStyle(el).backgroundColor")
        assert colour not in ("rgba(0, 0, 0, 0)", "transparent")
    meta = answers(page, 0).first.locator(".meta").inner_text()
    assert f"{n} tokens" in meta and "finish:" in meta
    assert page.evaluate("document.activeElement.id") == "pg-prompt"  # ready for the next message
    page.screenshot(path=artifacts / "playground-chat-1280.png", full_page=True)

    # A follow-up carries the conversation so far.
    page.fill("#pg-prompt", "And of Quillonia?")
    with page.expect_request(lambda r: r.url.endswith("/v1/chat/completions")) as sent:
        page.click("#pg-send")
    roles = [m["role"] for m in sent.value.post_data_json["messages"]]
    assert roles == ["system", "user", "assistant", "user"]
    wait_for_answer(page, 0, 2)


def test_side_by_side_sends_the_same_prompt_to_the_fine_tuned_model_and_its_base(console, seeded, artifacts):
    model = seeded["model"]
    page = console.open(f"#/playground?model={model}")
    page.wait_for_function(f"document.querySelector('#pg-model-a')?.value === {model!r}")
    page.check("#pg-compare")
    assert page.input_value("#pg-model-b") == TINY  # the base it was fine-tuned from
    assert (
        page.evaluate("location.hash")
        == f"#/playground?model={model.replace(':', '%3A').replace('/', '%2F')}&compare=tuneserve%2Ftiny-random"
    )
    page.fill("#pg-max-tokens", "5")
    page.fill("#pg-prompt", "Who are you?")
    requests = []
    page.on("request", lambda r: requests.append(r.post_data_json) if r.url.endswith("/v1/chat/completions") else None)
    page.press("#pg-prompt", "Enter")
    wait_for_answer(page, 0, 1)
    wait_for_answer(page, 1, 1)
    assert sorted(r["model"] for r in requests) == sorted([model, TINY])
    assert all(r["messages"][-1]["content"] == "Who are you?" for r in requests)
    for pane, name in ((0, model), (1, TINY)):
        assert name in page.inner_text(f'.pane[data-pane="{pane}"] .pane-title')
        assert page.locator(f'.pane[data-pane="{pane}"] .msg.user').inner_text().endswith("Who are you?")
        assert answers(page, pane).first.locator(".tok").count() >= 1
    page.screenshot(path=artifacts / "playground-compare-1280.png", full_page=True)
    page.set_viewport_size(NARROW)
    assert page.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 1
    page.screenshot(path=artifacts / "playground-compare-390.png", full_page=True)

    page.click("#pg-clear")
    expect(answers(page, 0)).to_have_count(0)
    expect(answers(page, 1)).to_have_count(0)
