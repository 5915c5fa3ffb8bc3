"""What a client reads of a training process that died without its own error event (runners/state.last_error_line):
the exception's line, never the traceback or the server's paths."""

from __future__ import annotations

from tuneserve.jobs.runners.state import last_error_line

CRASH = """Traceback (most recent call last):
  File "/srv/tuneserve/.venv/lib/python3.11/site-packages/torch/serialization.py", line 3, in load
    return _load(f)
           ^^^^^^^^
RuntimeError: cannot open /srv/tuneserve-data/jobs/ftjob-1/final/model.bin: unexpected EOF
"""


def test_the_exception_line_without_traceback_or_server_paths():
    detail = last_error_line(CRASH)
    assert detail.startswith("RuntimeError: cannot open model.bin: unexpected EOF")
    assert "Traceback" not in detail and "/srv" not in detail and "site-packages" not in detail
    assert "stderr.log" in detail  # where the operator finds the rest


def test_nothing_to_say_for_an_empty_stderr():
    assert last_error_line("") == last_error_line("\n  \n") == ""
