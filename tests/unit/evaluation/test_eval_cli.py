"""`tuneserve eval` refuses bad input and an unreachable endpoint with a message and exit status 1
(the full command against a live server is in tests/e2e/test_eval_synth.py)."""

from __future__ import annotations

import pytest

from tests.conftest import free_port
from tuneserve.cli import main


@pytest.fixture
def dataset(write_jsonl):
    return write_jsonl([{"question": "Capital of Marnak?", "answer": "Velspire."}, {"question": "Capital of Zorbia?"}])


def run(capsys, *args: str) -> tuple[int, str]:
    code = main(["eval", *args])
    return code, capsys.readouterr().err


def test_bad_arguments(capsys, dataset, tmp_path):
    base = ["--base-url", "http://127.0.0.1:1/v1", "--output", str(tmp_path / "r"), "--dataset", str(dataset)]
    code, err = run(capsys, *base, "--model", "a", "--model", "a")
    assert code == 1 and "must differ" in err
    code, err = run(capsys, *base, "--model", "a", "--judge-base-url", "http://127.0.0.1:1/v1")
    assert code == 1 and "--judge-base-url needs --judge-model" in err


def test_a_bad_dataset_line_is_named(capsys, dataset, tmp_path):
    code, err = run(
        capsys, "--base-url", "http://127.0.0.1:1/v1", "--model", "a", "--dataset", str(dataset), "--output", str(tmp_path / "r")
    )
    assert code == 1 and "line 2: 'answer' is missing" in err
    assert not (tmp_path / "r").exists()


def test_an_unreachable_endpoint(capsys, write_jsonl, tmp_path):
    ok = write_jsonl([{"question": "q", "answer": "a"}], name="ok.jsonl")
    code, err = run(
        capsys,
        "--base-url",
        f"http://127.0.0.1:{free_port()}",
        "--model",
        "a",
        "--dataset",
        str(ok),
        "--output",
        str(tmp_path / "r"),
        "--retries",
        "0",
    )
    assert code == 1 and "cannot reach the endpoint" in err and "Traceback" not in err
