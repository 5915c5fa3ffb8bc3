"""The local runner with several processes per job (one per GPU on a multi-GPU host; here forced to 2
CPU processes over gloo with --procs-per-job): the job trains as two ranks to success, and a cancel
reaches every rank."""

from __future__ import annotations


from tests.conftest import TINY, chat_jsonl, start_server, training_pids, wait_for, wait_for_status


def test_two_ranks_train_to_success_and_cancel_reaches_both(tmp_path, tiny_model_ready):
    data_dir = tmp_path / "data"
    server = start_server(data_dir, "--procs-per-job", "2")
    try:
        client = server.client()
        file = client.files.create(file=("t.jsonl", chat_jsonl(48)), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(model=TINY, training_file=file.id, hyperparameters={"n_epochs": 2, "batch_size": 4})
        job_dir = data_dir / "jobs" / job.id
        assert len(wait_for(lambda: len(training_pids(job_dir)) == 2 and training_pids(job_dir), 60, "two ranks")) == 2
        job = wait_for_status(client, job.id, {"succeeded", "failed", "cancelled"}, timeout_s=120)
        assert job.status == "succeeded", job.error
        messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100)]
        assert any(m.startswith("Training on 48 examples") and "2 process(es)" in m for m in messages), messages
        assert (job_dir / "stderr-rank1.log").exists()  # each rank keeps its own log

        long = client.fine_tuning.jobs.create(
            model=TINY, training_file=file.id, hyperparameters={"n_epochs": 30, "batch_size": 4}
        )
        long_dir = data_dir / "jobs" / long.id
        wait_for(lambda: len(training_pids(long_dir)) == 2, 60, "two ranks")
        assert client.fine_tuning.jobs.cancel(long.id).status == "cancelled"
        wait_for(lambda: training_pids(long_dir) == [], 20, "both ranks to end")
    finally:
        server.stop()
