"""validate_file: the upload-time report. Errors name their line and carry a stable code."""

from __future__ import annotations

import json

import pytest

from tuneserve.data import validate_file
from tuneserve.data.validation import MAX_LISTED_ERRORS

GOOD_CHAT = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "r"}]}


def lines(*records) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records).encode()


def only_error(report):
    assert not report.ok
    assert len(report.errors) == 1, report.errors
    return report.errors[0]


def test_valid_file_report(write_jsonl):
    records = [{"messages": [{"role": "user", "content": f"q{k}"}, {"role": "assistant", "content": "r"}]} for k in range(12)]
    report = validate_file(write_jsonl(records))
    assert report.ok
    assert (report.format, report.kind, report.container, report.n_examples) == ("chat", "sft", "jsonl", 12)
    assert (report.errors, dict(report.error_counts), report.warnings, dict(report.warning_counts)) == ([], {}, [], {})
    assert (report.duplicates, report.empty_assistant_turns, report.tokens) == (0, 0, None)
    assert report.summary() == "12 examples in chat format"
    assert report.as_dict() == {
        "ok": True,
        "format": "chat",
        "kind": "sft",
        "container": "jsonl",
        "n_examples": 12,
        "errors": [],
        "error_counts": {},
        "warnings": [],
        "warning_counts": {},
        "duplicates": 0,
        "empty_assistant_turns": 0,
        "tokens": None,
    }


def test_fewer_than_10_examples_is_a_warning_not_an_error(write_jsonl):
    report = validate_file(
        write_jsonl(
            [
                GOOD_CHAT,
                {
                    **GOOD_CHAT,
                    "messages": [*GOOD_CHAT["messages"], {"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}],
                },
            ]
        )
    )
    assert report.ok and report.n_examples == 2
    assert dict(report.warning_counts) == {"fewer_than_10_examples": 1}
    (warning,) = report.warnings
    assert (warning.line, warning.code) == (None, "fewer_than_10_examples")
    assert "at least 10" in warning.message
    assert report.summary() == f"2 examples in chat format; 1 warning, first: {warning.message}"
    assert report.as_dict()["warnings"] == [{"line": None, "code": "fewer_than_10_examples", "message": warning.message}]


@pytest.mark.parametrize("content", [b"", b"   \n\n\t\n"])
def test_empty_file(write_bytes, content):
    error = only_error(validate_file(write_bytes(content)))
    assert (error.code, error.line) == ("empty_file", None)
    assert "empty" in error.message


def test_binary_file(write_bytes):
    error = only_error(validate_file(write_bytes(b"PK\x03\x04\x00\x00binary\x00stuff")))
    assert error.code == "invalid_file_encoding"
    assert "binary" in error.message


def test_nul_byte_past_the_first_block_names_its_line(write_bytes):
    body = lines(*[GOOD_CHAT] * 200)  # well past the 4096-byte sniff
    n = body.count(b"\n")
    report = validate_file(write_bytes(body + b'{"messages": "\x00"}\n'))
    error = only_error(report)
    assert (error.code, error.line) == ("invalid_file_encoding", n + 1)
    assert report.n_examples == n


def test_non_utf8_bytes_on_line_3(write_bytes):
    body = lines(GOOD_CHAT, GOOD_CHAT) + b'{"messages": [{"role": "user", "content": "caf\xe9"}]}\n' + lines(GOOD_CHAT)
    report = validate_file(write_bytes(body))
    error = only_error(report)
    assert (error.code, error.line) == ("invalid_file_encoding", 3)
    assert str(error).startswith("line 3: ")
    assert report.n_examples == 2  # a file-level problem ends the scan


def test_non_utf8_bytes_in_json_array_name_the_line(write_bytes):
    body = b'[\n  {"instruction": "a", "output": "b"},\n  {"instruction": "caf\xe9", "output": "b"}\n]\n'
    error = only_error(validate_file(write_bytes(body, name="x.json")))
    assert (error.code, error.line) == ("invalid_file_encoding", 3)


def test_broken_json_on_line_2(write_bytes):
    report = validate_file(write_bytes(lines(GOOD_CHAT, '{"messages": [', GOOD_CHAT)))
    error = only_error(report)
    assert (error.code, error.line) == ("invalid_json", 2)
    assert "invalid JSON" in error.message


def test_unknown_role(write_jsonl):
    bad = {"messages": [{"role": "user", "content": "q"}, {"role": "bot", "content": "r"}]}
    error = only_error(validate_file(write_jsonl([GOOD_CHAT, bad])))
    assert (error.code, error.line) == ("unknown_role", 2)
    assert "messages[1]" in error.message and "'bot'" in error.message


def test_missing_assistant_turn(write_jsonl):
    bad = {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]}
    error = only_error(validate_file(write_jsonl([bad, GOOD_CHAT])))
    assert (error.code, error.line) == ("missing_assistant_message", 1)


def test_all_assistant_turns_weighted_out_is_missing_assistant(write_jsonl):
    bad = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "r", "weight": 0}]}
    error = only_error(validate_file(write_jsonl([bad])))
    assert error.code == "missing_assistant_message"


@pytest.mark.parametrize(
    "message",
    [
        {"role": "user", "content": "q", "weight": 1},
        {"role": "system", "content": "s", "weight": 0},
    ],
)
def test_weight_on_a_non_assistant_message(write_jsonl, message):
    bad = {"messages": [message, {"role": "user", "content": "q"}, {"role": "assistant", "content": "r"}]}
    error = only_error(validate_file(write_jsonl([GOOD_CHAT, GOOD_CHAT, bad])))
    assert (error.code, error.line) == ("invalid_weight", 3)


def test_weight_other_than_0_or_1(write_jsonl):
    bad = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "r", "weight": 0.5}]}
    error = only_error(validate_file(write_jsonl([bad])))
    assert error.code == "invalid_weight"


def test_mixed_formats(write_jsonl):
    report = validate_file(write_jsonl([GOOD_CHAT, {"prompt": "p", "completion": "c"}, GOOD_CHAT]))
    error = only_error(report)
    assert (error.code, error.line) == ("mixed_formats", 2)
    assert "prompt_completion" in error.message and "chat" in error.message
    assert (report.format, report.n_examples) == ("chat", 2)


def test_json_array_with_bad_item_4(write_json):
    items = [{"instruction": f"i{k}", "output": "o"} for k in range(6)]
    items[3] = {"instruction": "i3", "output": ["not", "a", "string"]}
    report = validate_file(write_json(items))
    error = only_error(report)
    assert (error.code, error.line) == ("invalid_content", 4)
    assert (report.format, report.n_examples) == ("alpaca", 5)


def test_unknown_keys(write_jsonl):
    error = only_error(validate_file(write_jsonl([{"question": "q", "answer": "a"}])))
    assert (error.code, error.line) == ("unknown_format", 1)
    assert "answer, question" in error.message


def test_a_file_where_no_record_matches_a_format(write_jsonl):
    records = [{"question": "q", "answer": "a"}] * 25
    report = validate_file(write_jsonl(records))
    assert not report.ok
    assert report.format is None and report.n_examples == 0
    assert dict(report.error_counts) == {"unknown_format": 25}
    assert len(report.errors) == MAX_LISTED_ERRORS
    assert [e.line for e in report.errors] == list(range(1, MAX_LISTED_ERRORS + 1))
    assert "answer, question" in report.errors[0].message


@pytest.mark.parametrize(
    "name, fmt, kind, n",
    [
        ("alpaca_en_demo.json", "alpaca", "sft", 999),
        ("identity.json", "alpaca", "sft", 91),
        ("dpo_en_demo.json", "sharegpt_dpo", "preference", 300),
        ("glaive_toolcall_en_demo.json", "sharegpt", "sft", 300),
    ],
)
def test_real_sample_files_validate(sample_file, name, fmt, kind, n):
    path = sample_file(name)
    report = validate_file(path)
    assert report.ok, report.errors
    assert (report.format, report.kind, report.container, report.n_examples) == (fmt, kind, "json", n)
    assert not report.error_counts
    # the LLaMA-Factory demo files really hold exact duplicates; each is reported against its first copy
    raw = json.loads(path.read_text())
    canonical = [json.dumps(item, sort_keys=True) for item in raw]
    assert report.duplicates == len(canonical) - len(set(canonical))
    assert report.warning_counts.get("duplicate_example", 0) == report.duplicates
    for warning in report.warnings:
        assert warning.code == "duplicate_example"
        first = int(warning.message.rsplit(" ", 1)[1])
        assert raw[warning.line - 1] == raw[first - 1] and first < warning.line


def test_collects_twenty_errors_and_counts_them_all(write_jsonl):
    records = [GOOD_CHAT]
    for k in range(30):  # lines 2..31: alternate two kinds of error
        if k % 2 == 0:
            records.append({"messages": [{"role": "user", "content": "q"}, {"role": "robot", "content": "r"}]})
        else:
            records.append({"messages": [{"role": "user", "content": "q"}]})
    records.append(GOOD_CHAT)
    report = validate_file(write_jsonl(records))

    assert not report.ok
    assert report.n_examples == 2
    assert len(report.errors) == MAX_LISTED_ERRORS == 20
    assert [e.line for e in report.errors] == list(range(2, 22))
    assert dict(report.error_counts) == {"unknown_role": 15, "missing_assistant_message": 15}
    assert report.summary() == f"line 2: {report.errors[0].message} (29 more errors)"
    as_dict = report.as_dict()
    assert as_dict["ok"] is False and len(as_dict["errors"]) == 20
    assert as_dict["errors"][0] == {"line": 2, "code": "unknown_role", "message": report.errors[0].message}


def test_a_file_of_only_blank_json_array_has_no_examples(write_json):
    report = validate_file(write_json([]))
    error = only_error(report)
    assert error.code == "no_examples"
    assert report.summary() == str(error)


# -- duplicates, empty turns, warnings ------------------------------------------------------------


def chat(q, r="r"):
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": r}]}


def test_duplicates_are_counted_after_normalization(write_jsonl):
    # the same conversation written twice as chat and ... once with an unknown key: all three normalize alike
    records = [chat(f"q{k}") for k in range(10)] + [chat("q3"), {**chat("q3"), "note": "copy"}, chat("q3", "other answer")]
    report = validate_file(write_jsonl(records))
    assert report.ok
    assert report.duplicates == 2
    dups = [w for w in report.warnings if w.code == "duplicate_example"]
    assert [(w.line, w.message) for w in dups] == [(11, "the same example as line 4"), (12, "the same example as line 4")]
    assert dict(report.warning_counts) == {"duplicate_example": 2, "unknown_key": 1}


def test_empty_assistant_turns_are_counted(write_jsonl):
    some_empty = {
        "messages": [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": " "},
            {"role": "user", "content": "b"},
            {"role": "assistant", "content": "fine"},
        ]
    }
    call_only = {
        "messages": [
            {"role": "user", "content": "a"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
            },
        ]
    }
    report = validate_file(write_jsonl([chat(f"q{k}") for k in range(10)] + [some_empty, call_only]))
    assert report.ok
    assert report.empty_assistant_turns == 1  # a turn that only calls a tool is not empty
    (warning,) = [w for w in report.warnings if w.code == "empty_assistant_turn"]
    assert (warning.line, warning.message) == (11, "1 assistant turn is empty")
    assert report.as_dict()["empty_assistant_turns"] == 1


def test_warnings_are_listed_up_to_20_and_all_counted(write_jsonl):
    report = validate_file(write_jsonl([{**chat(f"q{k}"), "extra": k} for k in range(30)]))
    assert report.ok
    assert len(report.warnings) == 20 and dict(report.warning_counts) == {"unknown_key": 30}
    assert [w.line for w in report.warnings] == list(range(1, 21))
    assert report.summary().startswith("30 examples in chat format; 30 warnings, first: line 1: unknown key 'extra'")


def test_warnings_do_not_block_but_errors_do(write_jsonl):
    records = [chat(f"q{k}") for k in range(3)]
    report = validate_file(write_jsonl(records))
    assert report.ok and report.warning_counts  # fewer than 10
    report = validate_file(write_jsonl(records + [{"messages": []}]))
    assert not report.ok and report.n_examples == 3


# -- token statistics: the wiring (tokens.py tests the numbers) ----------------------------------


def test_tokens_come_from_a_second_pass_over_the_valid_records(write_jsonl, monkeypatch):
    import tuneserve.data.tokens as tokens

    calls = []

    def fake_token_report(records, model, *, max_seq_length, n_epochs):
        seen = list(records)
        calls.append((model, max_seq_length, n_epochs, [r.line for r in seen], type(seen[0]).__name__))
        return {"n_examples": len(seen), "model": model}

    monkeypatch.setattr(tokens, "token_report", fake_token_report)
    path = write_jsonl([chat("a"), {"messages": "bad"}, chat("b"), {"prompt": "p", "completion": "c"}, chat("c")])

    assert validate_file(path).tokens is None  # no model: no second pass
    assert calls == []
    report = validate_file(path, model="tuneserve/tiny-random", max_seq_length=256, n_epochs=3)
    assert calls == [("tuneserve/tiny-random", 256, 3, [1, 3, 5], "Example")]
    assert report.tokens == {"n_examples": 3, "model": "tuneserve/tiny-random"}
    assert report.as_dict()["tokens"] == report.tokens
    assert not report.ok  # the bad lines still fail the file; the stats describe what would train


def test_a_token_report_failure_is_a_warning(write_jsonl, monkeypatch):
    import tuneserve.data.tokens as tokens

    def broken(records, model, **kwargs):
        raise OSError(f"no such model: {model}")

    monkeypatch.setattr(tokens, "token_report", broken)
    report = validate_file(write_jsonl([chat(f"q{k}") for k in range(10)]), model="nope/missing")
    assert report.ok and report.tokens is None
    assert dict(report.warning_counts) == {"token_report_failed": 1}
    assert "no such model: nope/missing" in report.warnings[0].message


def test_no_second_pass_when_nothing_is_valid(write_jsonl, monkeypatch):
    import tuneserve.data.tokens as tokens

    monkeypatch.setattr(tokens, "token_report", lambda *a, **k: pytest.fail("must not be called"))
    report = validate_file(write_jsonl([{"messages": []}]), model="m")
    assert report.tokens is None and not report.ok


def test_an_unforeseen_exception_becomes_a_line_error_not_a_crash(write_jsonl, monkeypatch):
    import tuneserve.data.formats as formats

    real = formats.normalize

    def flaky(record, fmt, line, **kwargs):
        if line == 2:
            raise TypeError("unhashable type: 'list'")
        return real(record, fmt, line, **kwargs)

    monkeypatch.setattr(formats, "normalize", flaky)
    report = validate_file(write_jsonl([chat("a"), chat("b"), chat("c")]))
    error = only_error(report)
    assert (error.code, error.line) == ("invalid_record", 2)
    assert "TypeError" in error.message and report.n_examples == 2
