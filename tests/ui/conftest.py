"""The web console's test setup: Debian's chromium (installed here when missing), driven by
Playwright for Python, against a real `tuneserve serve` with the tiny model.

Every page a test opens is watched: a console error, an uncaught exception, a failed request, an
HTTP error answer or a request to anything but the server fails the test, unless that test says it
expects exactly that (e.g. the 400 of a bad upload). Screenshots go to $TUNESERVE_TEST_ARTIFACTS
(default: test-artifacts/ui/ at the repository root, which git ignores).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import chat_jsonl, fine_tune_tiny, start_server

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[2]
WIDE = {"width": 1280, "height": 900}
NARROW = {"width": 390, "height": 844}


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium, installed with apt-get when it is missing (the tests run as root in CI)."""
    if Path(CHROMIUM).exists():
        return CHROMIUM
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        message = f"{CHROMIUM} is missing and cannot be installed here: run `sudo apt-get install -y chromium` (Debian)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            pytest.fail(f"`{' '.join(command)}` failed, so the console cannot be tested:\n{done.stderr[-2000:]}")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"apt-get installed chromium but {CHROMIUM} does not exist")
    return CHROMIUM


@pytest.fixture(scope="session")
def artifacts() -> Path:
    path = Path(os.environ.get("TUNESERVE_TEST_ARTIFACTS") or ROOT / "test-artifacts") / "ui"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="package")
def playwright_browser(chromium):
    """One browser for the console tests (package scope: it and the server stop when these tests end)."""
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=20_000)  # as long as the console fixture's page timeout, not 5 s: the machine may be busy
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium)
        yield browser
        browser.close()


@pytest.fixture(scope="package")
def ui_server(tmp_path_factory, tiny_model_ready):
    server = start_server(tmp_path_factory.mktemp("ui") / "data")
    yield server
    server.stop()


@pytest.fixture(scope="package")
def seeded(ui_server):
    """What most pages show: a checked training file and a finished fine-tune of the tiny model."""
    client = ui_server.client()
    job = fine_tune_tiny(client, chat_jsonl(12), "seeded", n_epochs=2)
    return {"job": job, "file": job.training_file, "model": job.fine_tuned_model}


@dataclass
class Watched:
    """A browser page and what went wrong in it."""

    page: object
    base_url: str
    problems: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    allowed: list[re.Pattern] = field(default_factory=list)

    def allow(self, pattern: str) -> None:
        """Accept problems matching `pattern` (a test that provokes an error answer on purpose)."""
        self.allowed.append(re.compile(pattern))

    def open(self, hash_route: str):
        """Go to a console route and wait for its page (not the one before it, when only the #hash changes)."""
        if self.page.url.startswith(self.base_url):
            self.page.evaluate("document.querySelector('main > .page')?.setAttribute('data-stale', '')")
        self.page.goto(f"{self.base_url}/{hash_route}")
        self.page.wait_for_selector("main > .page:not([data-stale]) h1")
        return self.page

    def unexpected(self) -> list[str]:
        return [p for p in self.problems if not any(a.search(p) for a in self.allowed)]


def watch(page, base_url: str) -> Watched:
    w = Watched(page, base_url)

    def on_console(message):
        if message.type == "error":
            w.problems.append(f"console error: {message.text} at {message.location.get('url')}")

    def on_request(request):
        w.requests.append(f"{request.method} {request.url}")
        if not request.url.startswith((base_url, "data:", "blob:", "about:")):
            w.problems.append(f"request outside the server (the console must work offline): {request.url}")

    def on_failed(request):
        if request.failure and "ERR_ABORTED" not in request.failure:  # aborted: a navigation or the Stop button
            w.problems.append(f"request failed: {request.method} {request.url}: {request.failure}")

    def on_response(response):
        if response.status >= 400:
            w.problems.append(f"HTTP {response.status}: {response.request.method} {response.url}")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: w.problems.append(f"uncaught exception: {exc}"))
    page.on("request", on_request)
    page.on("requestfailed", on_failed)
    page.on("response", on_response)
    return w


def painted(page, chart_id: str, series: str) -> int:
    """How many pixels of chart `chart_id`'s canvas have the colour of `series` (as its legend entry
    shows it): 0 unless uPlot drew that series' line or points."""
    return page.evaluate(
        """([chartId, series]) => {
        const entry = document.querySelector(`#${chartId} .legend li[data-series="${series}"]`);
        const canvas = document.querySelector(`#${chartId} canvas`);
        if (!entry || !canvas) return 0;
        const probe = document.createElement('canvas').getContext('2d');
        probe.fillStyle = getComputedStyle(entry).getPropertyValue('--c').trim();  // read back as #rrggbb
        const [r, g, b] = [1, 3, 5].map((i) => parseInt(probe.fillStyle.slice(i, i + 2), 16));
        const {data} = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
        let n = 0;
        for (let i = 0; i < data.length; i += 4) {
            if (data[i + 3] > 200 && Math.abs(data[i] - r) + Math.abs(data[i + 1] - g) + Math.abs(data[i + 2] - b) < 40) n++;
        }
        return n;
    }""",
        [chart_id, series],
    )


def fmt_num(x: float) -> str:
    """The console's fmtNum (dom.js) for a number between 0.001 and 1000: four significant digits."""
    value = float(f"{x:.4g}")
    return str(int(value)) if value.is_integer() else repr(value)


@pytest.fixture
def console(playwright_browser, ui_server):
    """A fresh browser context at 1280 px on the console; the test fails on any unexpected problem."""
    context = playwright_browser.new_context(viewport=WIDE)
    context.set_default_timeout(20_000)
    watched = watch(context.new_page(), ui_server.base_url)
    yield watched
    context.close()
    assert not watched.unexpected(), "\n".join(watched.unexpected())
