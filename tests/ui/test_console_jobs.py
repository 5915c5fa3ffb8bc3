"""Jobs: a job created through the form trains, and its page follows it live (status timeline,
loss and accuracy charts, checkpoints, events); pause, resume and cancel from the job page."""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.conftest import TINY, chat_jsonl

pytestmark = pytest.mark.ui


def badge(page) -> str:
    return page.inner_text("#job-status").strip().lower()


def wait_for_badge(page, status: str, timeout_s: float = 60) -> None:
    page.wait_for_function(
        f"document.querySelector('#job-status')?.textContent.trim().toLowerCase() === {status!r}", timeout=timeout_s * 1000
    )


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
    expected = {
        "model": TINY,
        "training_file": file.id,
        "validation_file": file.id,
        "suffix": "from-form",
        "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1, "batch_size": 4}}},
        "lora": {"r": 4},
        "lr_scheduler_type": "constant",
        "metadata": {"origin": "console"},
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
    seen: list[str] = []
    deadline = time.monotonic() + 150
    shot_running = False
    while time.monotonic() < deadline:
        status = badge(page) if page.locator("#job-status .badge").count() else ""
        if status and (not seen or seen[-1] != status):
            seen.append(status)
        if status == "running" and not shot_running and page.locator("#chart-loss .series-train_loss").count():
            page.screenshot(path=artifacts / "job-running-1280.png", full_page=True)
            shot_running = True
        if status in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.2)
    assert seen and seen[-1] == "succeeded", f"statuses seen: {seen}; job: {client.fine_tuning.jobs.retrieve(job_id)}"
    assert {"validating files", "queued", "running"} & set(seen[:-1]), f"the page showed no progress: {seen}"

    job = client.fine_tuning.jobs.retrieve(job_id)
    assert job.hyperparameters.n_epochs == 1 and job.hyperparameters.batch_size == 4
    assert job.metadata == {"origin": "console"} and job.suffix == "from-form"

    # The charts hold exactly the job's metrics: one point per training step logged, validation too.
    events = client.fine_tuning.jobs.list_events(job_id, limit=1000).data
    train_points = sum(1 for e in events if e.type == "metrics" and (e.data or {}).get("train_loss") is not None)
    valid_points = sum(1 for e in events if e.type == "metrics" and (e.data or {}).get("valid_loss") is not None)
    assert train_points >= 3 and valid_points >= 1
    page.wait_for_function(f"document.querySelector('#chart-loss .series-train_loss')?.dataset.points === '{train_points}'")
    assert int(page.get_attribute("#chart-loss .series-valid_loss", "data-points")) == valid_points
    assert page.locator("#chart-accuracy .series-train_mean_token_accuracy path").count() == 1
    path = page.get_attribute("#chart-loss .series-train_loss path", "d")
    assert len(re.findall(r"[ML]-?[\d.]+,-?[\d.]+", path)) == train_points

    assert page.locator('.timeline li[data-status="succeeded"].step-done').count() == 1
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job_id).data
    page.wait_for_selector("#ckpt-h ~ div tbody tr")
    assert page.locator("#ckpt-h ~ div tbody tr").count() == len(checkpoints) >= 1
    assert "The job has successfully completed" in page.inner_text(".events")
    assert page.locator("text=Download adapter").is_visible()
    page.screenshot(path=artifacts / "job-succeeded-1280.png", full_page=True)


def test_pause_resume_and_cancel_from_the_job_page(console, ui_server, artifacts):
    client = ui_server.client()
    # A long job keeps the single training slot busy, so the second one waits in the queue.
    data = chat_jsonl(40)
    long_file = client.files.create(file=("long.jsonl", data), purpose="fine-tune")
    long_job = client.fine_tuning.jobs.create(
        model=TINY, training_file=long_file.id, suffix="long", hyperparameters={"n_epochs": 50, "batch_size": 1}
    )
    waiting = client.fine_tuning.jobs.create(model=TINY, training_file=long_file.id, suffix="waiting")
    page = console.page
    page.on("dialog", lambda dialog: dialog.accept())  # "Cancel job?" is confirmed
    try:
        console.open(f"#/jobs/{waiting.id}")
        wait_for_badge(page, "queued")
        page.click("button:has-text('Pause')")
        wait_for_badge(page, "paused")
        assert client.fine_tuning.jobs.retrieve(waiting.id).status == "paused"
        assert page.locator('.timeline li[data-status="paused"]').count() == 1
        assert page.locator("button:has-text('Resume')").is_visible()
        page.screenshot(path=artifacts / "job-paused-1280.png", full_page=True)
        page.click("button:has-text('Resume')")
        wait_for_badge(page, "queued")
        page.click("button:has-text('Cancel job')")
        wait_for_badge(page, "cancelled")
        assert client.fine_tuning.jobs.retrieve(waiting.id).status == "cancelled"
        assert page.locator("button:has-text('Cancel job')").is_hidden()

        console.open(f"#/jobs/{long_job.id}")
        wait_for_badge(page, "running", timeout_s=90)
        page.click("button:has-text('Cancel job')")
        wait_for_badge(page, "cancelled")
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
    alert = page.wait_for_selector(".form-status .notice-error")
    assert "The job was not created" in alert.inner_text() and "n_epochs" in alert.inner_text()
    assert page.get_attribute("#job-n_epochs", "aria-invalid") == "true"
    assert page.evaluate("document.activeElement.id") == "job-n_epochs"
    assert page.evaluate("location.hash") == "#/jobs/new"
