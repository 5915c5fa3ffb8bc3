"""Every page of the console loads, shows the server's data, fits a 1280 px and a 390 px window,
and can be reached and used from the keyboard; screenshots of each are saved."""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.sync_api import expect

from tests.conftest import TINY, chat_jsonl, wait_for_status
from tests.ui.conftest import NARROW, WIDE, painted

pytestmark = pytest.mark.ui


def page_checks(seeded) -> dict[str, tuple[str, callable]]:
    job, file, model = seeded["job"].id, seeded["file"], seeded["model"]

    def files(page):
        page.wait_for_selector(f'[data-file="{file}"]')

    def file_detail(page):
        page.wait_for_selector(".report h3:has-text('Validation report')")
        assert "12" in page.inner_text(".report .facts")

    def jobs(page):
        row = page.wait_for_selector(f'[data-job="{job}"]')
        assert "succeeded" in row.inner_text().lower()

    def new_job(page):
        page.wait_for_function("document.querySelector('#job-training_file')?.value.startsWith('file-')")
        assert page.locator("#job-model option").count() >= 3  # two base models and the fine-tuned one

    def job_detail(page):
        page.wait_for_selector("#job-status .status-succeeded")
        # The loss curve, drawn by uPlot into a canvas that fits the window: two or more training steps.
        expect(page.locator("#chart-loss canvas")).to_have_count(1)
        points = page.locator('#chart-loss .legend li[data-series="train_loss"]')
        expect(points).to_have_attribute("data-points", re.compile(r"^([2-9]|[1-9]\d+)$"))
        assert painted(page, "chart-loss", "train_loss") > 20
        canvas = page.locator("#chart-loss canvas").bounding_box()
        assert 0 < canvas["width"] <= page.viewport_size["width"]

    def models(page):
        # The fine-tuned model is drawn under its base: lineage.
        page.wait_for_selector(f'[data-model="{TINY}"] [data-model="{model}"]')

    def playground(page):
        page.wait_for_function(f"document.querySelector('#pg-model-a')?.value === {model!r}")

    def evals(page):
        page.wait_for_selector(".page-evals [data-eval], .page-evals p:text('No evaluations yet')")

    return {
        "files": ("#/files", files),
        "file-report": (f"#/files/{file}", file_detail),
        "jobs": ("#/jobs", jobs),
        "job-new": ("#/jobs/new", new_job),
        "job-detail": (f"#/jobs/{job}", job_detail),
        "models": ("#/models", models),
        "playground": (f"#/playground?model={model}", playground),
        "evals": ("#/evals", evals),
    }


def test_every_page_loads_at_1280_and_390_px(console, seeded, artifacts):
    page = console.page
    for viewport, label in ((WIDE, "1280"), (NARROW, "390")):
        page.set_viewport_size(viewport)
        for name, (route, check) in page_checks(seeded).items():
            console.open(route)
            check(page)
            assert page.title().endswith("· tuneserve")
            # Nothing sticks out sideways: the layout reflows (tables scroll inside their own box).
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 1, f"{name} at {label} px is {overflow} px wider than the window"
            page.screenshot(path=artifacts / f"{name}-{label}.png", full_page=True)
    assert (artifacts / "job-detail-390.png").stat().st_size > 10_000


def test_console_files_are_served_from_the_package_and_docs_still_work(ui_server):
    index = httpx.get(f"{ui_server.base_url}/")
    assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/ui/js/app.js">' in index.text
    script = httpx.get(f"{ui_server.base_url}/ui/js/app.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    # The charts' library is vendored in the package and loaded from the server (the console works offline).
    vendored = (
        ("/ui/vendor/uPlot.iife.min.js", "text/javascript", "leeoniya/uPlot"),
        ("/ui/vendor/uPlot.min.css", "text/css", ".uplot"),
    )
    for path, media_type, start in vendored:
        assert f'"{path}"' in index.text
        answer = httpx.get(f"{ui_server.base_url}{path}")
        assert answer.status_code == 200 and answer.headers["content-type"].startswith(media_type)
        assert start in answer.text[:100]
    assert httpx.get(f"{ui_server.base_url}/ui/%2e%2e/api/console.py").status_code == 404
    assert httpx.get(f"{ui_server.base_url}/docs").status_code == 200
    paths = httpx.get(f"{ui_server.base_url}/openapi.json").json()["paths"]
    assert "/v1/fine_tuning/jobs" in paths and not any(p == "/" or p.startswith("/ui") for p in paths)


def tab_to(page, selector: str, *, backwards: bool = False, limit: int = 40):
    """Press Tab (or Shift+Tab) until the focused element matches `selector`."""
    for _ in range(limit):
        page.keyboard.press("Shift+Tab" if backwards else "Tab")
        if page.evaluate("(s) => document.activeElement && document.activeElement.matches(s)", selector):
            return
    raise AssertionError(f"{selector} cannot be reached with the keyboard")


def focus_ring(page) -> tuple[str, float]:
    return page.evaluate(
        "(() => { const s = getComputedStyle(document.activeElement); return [s.outlineStyle, parseFloat(s.outlineWidth)]; })()"
    )


def test_keyboard_reaches_every_page_through_the_nav(console, seeded, artifacts):
    page = console.open("#/jobs")
    page.wait_for_selector(f'[data-job="{seeded["job"].id}"]')
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    for target, heading in (
        ("files", "Files"),
        ("models", "Models"),
        ("playground", "Playground"),
        ("evals", "Evaluations"),
        ("jobs", "Fine-tuning jobs"),
    ):
        # The first link is ahead of the skip link; the others are behind the page heading that has focus.
        tab_to(page, f'nav a[data-nav="{target}"]', backwards=target != "files")
        style, width = focus_ring(page)
        assert style != "none" and width >= 2, f"no visible focus on the {target} link: {style} {width}"
        page.keyboard.press("Enter")
        page.wait_for_function(f"location.hash.startsWith('#/{target}')")
        # Focus moves to the new page's heading, so the next Tab continues in the page.
        page.wait_for_function(f"document.activeElement.tagName === 'H1' && document.activeElement.textContent === {heading!r}")
        assert page.get_attribute(f'nav a[data-nav="{target}"]', "aria-current") == "page"
        if target == "files":
            page.screenshot(path=artifacts / "keyboard-focus-1280.png")

    # The skip link jumps past the navigation.
    page.reload()
    page.wait_for_selector("main h1")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    assert page.evaluate("location.hash").startswith("#/jobs")  # the skip link is not a route


def test_every_input_has_a_label(console, seeded):
    # Each page's last inputs or choices to arrive: forms fill in after the page heading appears.
    ready = {
        "#/files": "#files-list-h ~ .file-list[aria-busy='false']",
        f"#/files/{seeded['file']}": "#preview-model option[value]:not([value=''])",
        "#/jobs/new": "#job-model option",
        "#/playground": "#pg-model-a option",
        "#/evals": ".new-eval .checks input[type='checkbox']",
    }
    for route, selector in ready.items():
        page = console.open(route)
        page.wait_for_selector(selector, state="attached")
        unlabelled = page.evaluate("""[...document.querySelectorAll('main input, main select, main textarea')]
            .filter((el) => el.type !== 'hidden' && !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
            .map((el) => el.outerHTML.slice(0, 120))""")
        assert not unlabelled, f"{route}: {unlabelled}"


def test_models_page_draws_a_model_fine_tuned_from_a_fine_tuned_model_under_its_parent(console, ui_server, seeded, artifacts):
    client = ui_server.client()
    file = client.files.create(file=("grandchild.jsonl", chat_jsonl(10)), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model=seeded["model"], training_file=file.id, suffix="grandchild", hyperparameters={"n_epochs": 1, "batch_size": 5}
    )
    job = wait_for_status(client, job.id, {"succeeded", "failed"}, timeout_s=120)
    assert job.status == "succeeded", job.error
    page = console.open("#/models")
    node = page.wait_for_selector(
        f'[data-model="{TINY}"] > ul > [data-model="{seeded["model"]}"] > ul > [data-model="{job.fine_tuned_model}"]'
    )
    row = node.query_selector(".model-row").inner_text()
    assert seeded["model"] in row and job.id in row  # its parent and the job that made it
    page.click(f'[data-model="{job.fine_tuned_model}"] >> text=Compare with parent')
    page.wait_for_function(f"document.querySelector('#pg-model-b')?.value === {seeded['model']!r}")
    assert page.is_checked("#pg-compare") and page.input_value("#pg-model-a") == job.fine_tuned_model
    console.open("#/models")
    page.wait_for_selector(f'[data-model="{job.fine_tuned_model}"]')
    page.screenshot(path=artifacts / "models-lineage-1280.png", full_page=True)
