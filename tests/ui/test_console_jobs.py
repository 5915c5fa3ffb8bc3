"""Jobs: a job created through the form trains, and its page follows it live (status timeline,
loss and accuracy charts, checkpoints, events); pause, resume and cancel from the job page."""

from __future__ import annotations

import json
import re
import tarfile

import pytest
from playwright.sync_api import expect

from tests.conftest import TINY, chat_jsonl
from tests.ui.conftest import fmt_num, painted

pytestmark = pytest.mark.ui

TERMINAL = re.compile(r"^(succeeded|failed|cancelled)$", re.IGNORECASE)

# Every status the job page's badge shows, in order, noted by the page itself as it changes (so
# none is missed between two looks from the test).
RECORD_STATUSES = """() => {
    const badge = document.querySelector('#job-status');
    window.seenStatuses = [];
    const note = () => {
        const status = badge.textContent.trim().toLowerCase();
        if (status && window.seenStatuses.at(-1) !== status) window.seenStatuses.push(status);
    };
    note();
    new MutationObserver(note).observe(badge, {childList: true, subtree: true, characterData: true});
}"""


def expect_badge(page, status: str, timeout_s: float = 60) -> None:
    expect(page.locator("#job-status")).to_have_text(status, ignore_case=True, timeout=timeout_s * 1000)


def test_a_job_created_through_the_form_trains_and_its_page_follows_it(console, ui_server, artifacts):
    client = ui_server.client()
    file = client.files.create(file=("form-train.jsonl", chat_jsonl(12)), purpose="fine-tune")
    page = console.open("#/jobs/new")
    page.wait_for_selector(f'#job-training_file option[value="{file.id}"]', state="attached")
    page.select_option("#job-model", TINY)
    page.select_option("#job-training_file", file.id)
    page.select_option("#job-validation_file", file.id)
    page.fill("#job-n_epochs", "1")
    page.fill("#job-batch_size", "4")
    page.fill("#job-suffix", "from-form")
    page.fill("#job-lora-r", "4")
    page.select_option("#job-lr_scheduler_type", "constant")
    page.fill("#job-metadata", "origin=console")
    page.fill("#job-early_stopping_patience", "3")
    expected = {
        "model": TINY,
        "training_file": file.id,
        "validation_file": file.id,
        "suffix": "from-form",
        "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1, "batch_size": 4}}},
        "lora": {"r": 4},
        "lr_scheduler_type": "constant",
        "metadata": {"origin": "console"},
        "early_stopping_patience": 3,
    }
    page.click("summary:has-text('Request body')")
    assert json.loads(page.inner_text("#job-request-preview")) == expected
    page.screenshot(path=artifacts / "job-form-1280.png", full_page=True)

    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/v1/fine_tuning/jobs")) as sent:
        page.click("button:has-text('Create job')")
    assert sent.value.post_data_json == expected
    page.wait_for_url(re.compile(r"#/jobs/ftjob-"))
    job_id = page.evaluate("location.hash.split('/')[2]")

    # Watch the page, not the API: it must move through the statuses by itself, with no reload.
    page.wait_for_selector("#job-status")
    page.evaluate(RECORD_STATUSES)
    # A screenshot while it trains, once a loss curve is drawn (unless the job is done before that).
    page.wait_for_function(
        """() => {
        const status = document.querySelector('#job-status').textContent.trim().toLowerCase();
        return ['succeeded', 'failed', 'cancelled'].includes(status)
            || (status === 'running' && !!document.querySelector('#chart-loss li[data-series="train_loss"][data-points]'));
    }""",
        timeout=150_000,
    )
    if page.inner_text("#job-status").strip().lower() == "running":
        page.screenshot(path=artifacts / "job-running-1280.png", full_page=True)
    expect(page.locator("#job-status")).to_have_text(TERMINAL, timeout=150_000)
    seen = page.evaluate("window.seenStatuses")
    assert seen and seen[-1] == "succeeded", f"statuses seen: {seen}; job: {client.fine_tuning.jobs.retrieve(job_id)}"
    assert {"validating files", "queued", "running"} & set(seen[:-1]), f"the page showed no progress: {seen}"

    job = client.fine_tuning.jobs.retrieve(job_id)
    assert job.hyperparameters.n_epochs == 1 and job.hyperparameters.batch_size == 4
    assert job.metadata == {"origin": "console"} and job.suffix == "from-form"

    # The charts hold exactly the job's metrics: one point per training step logged, validation too.
    metrics = [
        e.data for e in reversed(client.fine_tuning.jobs.list_events(job_id, limit=1000).data) if e.type == "metrics" and e.data
    ]
    train = [m["train_loss"] for m in metrics if m.get("train_loss") is not None]
    valid = [m["valid_loss"] for m in metrics if m.get("valid_loss") is not None]
    assert len(train) >= 3 and len(valid) >= 1
    loss = page.locator("#chart-loss")
    # uPlot drew it: one canvas, a legend entry per series with data (its count set by uPlot's draw hook from
    # what it plotted), the last value of each, and on the canvas the training line and the series drawn last
    # (on top: the validation series may share their points).
    expect(loss.locator("canvas")).to_have_count(1)
    shown = [key for key in ("train_loss", "valid_loss", "full_valid_loss") if any(m.get(key) is not None for m in metrics)]
    expect(loss.locator(".legend li")).to_have_count(len(shown))
    assert loss.locator(".legend li").evaluate_all("(items) => items.map((li) => li.dataset.series)") == shown
    expect(loss.locator('li[data-series="train_loss"]')).to_have_attribute("data-points", str(len(train)))
    expect(loss.locator('li[data-series="valid_loss"]')).to_have_attribute("data-points", str(len(valid)))
    expect(loss.locator('li[data-series="train_loss"] .legend-last')).to_have_text(fmt_num(train[-1]))
    expect(loss.locator('li[data-series="valid_loss"] .legend-last')).to_have_text(fmt_num(valid[-1]))
    assert painted(page, "chart-loss", "train_loss") > 50 and painted(page, "chart-loss", shown[-1]) > 5
    # The same numbers as text, for screen readers: the description and the data table (a row per step).
    expect(page.locator("#chart-loss-desc")).to_contain_text(f"train: {fmt_num(train[-1])} at step")
    steps = {m["step"] for m in metrics if any(m.get(key) is not None for key in shown)}
    expect(loss.locator(".chart-data tbody tr")).to_have_count(len(steps))
    accuracy = page.locator("#chart-accuracy")
    expect(accuracy.locator("canvas")).to_have_count(1)
    train_accuracy = [m for m in metrics if m.get("train_mean_token_accuracy") is not None]
    assert train_accuracy
    expect(accuracy.locator('li[data-series="train_mean_token_accuracy"]')).to_have_attribute(
        "data-points", str(len(train_accuracy))
    )

    expect(page.locator('.timeline li[data-status="succeeded"].step-done')).to_have_count(1)
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job_id).data
    assert len(checkpoints) >= 1
    expect(page.locator("#ckpt-h ~ div tbody tr")).to_have_count(len(checkpoints))
    # The checkpoint that is the fine-tuned model, and why: the job says, the page shows it and marks its row.
    assert job.kept_checkpoint["step"] in {c.step_number for c in checkpoints}
    expect(page.locator("#kept-checkpoint")).to_have_text(job.kept_checkpoint["reason"])
    expect(page.locator(f'#ckpt-h ~ div tbody tr.kept[data-step="{job.kept_checkpoint["step"]}"] .badge')).to_have_text("kept")
    expect(page.locator(".events")).to_contain_text("The job has successfully completed")
    expect(page.locator("text=Download adapter")).to_be_visible()
    page.screenshot(path=artifacts / "job-succeeded-1280.png", full_page=True)
    # GGUF from the console: the browser saves the tar.gz the API builds, a real GGUF inside.
    for button, top in (("Download GGUF", f"{job_id}-gguf-f16"), ("Download LoRA GGUF", f"{job_id}-gguf-lora-f16")):
        with page.expect_download() as saved:
            page.click(f"button:text-is('{button}')")
        assert saved.value.suggested_filename == f"{top}.tar.gz"
        with tarfile.open(saved.value.path()) as tar:
            member = tar.extractfile(f"{top}/{top}.gguf")
            assert member is not None and member.read(4) == b"GGUF"
        expect(page.locator(".notice")).to_contain_text(f"Downloaded {top}.tar.gz")


def test_pause_resume_and_cancel_from_the_job_page(console, ui_server, artifacts):
    client = ui_server.client()
    # A long job keeps the single training slot busy, so the second one waits in the queue.
    data = chat_jsonl(40)
    long_file = client.files.create(file=("long.jsonl", data), purpose="fine-tune")
    long_job = client.fine_tuning.jobs.create(
        model=TINY,
        training_file=long_file.id,
        suffix="long",
        hyperparameters={"n_epochs": 50, "batch_size": 1},
        extra_body={"early_stopping_patience": 0},  # all 50 epochs: it must not stop early
    )
    waiting = client.fine_tuning.jobs.create(model=TINY, training_file=long_file.id, suffix="waiting")
    page = console.page
    page.on("dialog", lambda dialog: dialog.accept())  # "Cancel job?" is confirmed
    try:
        console.open(f"#/jobs/{waiting.id}")
        expect_badge(page, "queued")
        page.click("button:has-text('Pause')")
        expect_badge(page, "paused")
        assert client.fine_tuning.jobs.retrieve(waiting.id).status == "paused"
        expect(page.locator('.timeline li[data-status="paused"]')).to_have_count(1)
        expect(page.locator("button:has-text('Resume')")).to_be_visible()
        page.screenshot(path=artifacts / "job-paused-1280.png", full_page=True)
        page.click("button:has-text('Resume')")
        expect_badge(page, "queued")
        page.click("button:has-text('Cancel job')")
        expect_badge(page, "cancelled")
        assert client.fine_tuning.jobs.retrieve(waiting.id).status == "cancelled"
        expect(page.locator("button:has-text('Cancel job')")).to_be_hidden()

        console.open(f"#/jobs/{long_job.id}")
        expect_badge(page, "running", timeout_s=90)
        page.click("button:has-text('Cancel job')")
        expect_badge(page, "cancelled")
    finally:
        for job in (long_job, waiting):
            if client.fine_tuning.jobs.retrieve(job.id).status not in ("succeeded", "failed", "cancelled"):
                client.fine_tuning.jobs.cancel(job.id)


def test_a_refused_job_request_is_shown_beside_the_field_it_names(console, seeded):
    console.allow(r"status of 400")  # Chromium logs the refused request's answer
    console.allow(r"HTTP 400: POST .*/v1/fine_tuning/jobs$")
    page = console.open("#/jobs/new")
    page.wait_for_selector(f'#job-training_file option[value="{seeded["file"]}"]', state="attached")
    page.select_option("#job-model", TINY)
    page.select_option("#job-training_file", seeded["file"])
    page.fill("#job-n_epochs", "0")
    page.click("button:has-text('Create job')")
    alert = page.locator(".form-status .notice-error")
    expect(alert).to_contain_text("The job was not created")
    expect(alert).to_contain_text("n_epochs")
    expect(page.locator("#job-n_epochs")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#job-n_epochs")).to_be_focused()
    assert page.evaluate("location.hash") == "#/jobs/new"
