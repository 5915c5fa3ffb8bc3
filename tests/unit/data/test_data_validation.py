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
    report = validate_file(write_jsonl([GOOD_CHAT] * 3))
    assert report.ok
    assert (report.format, report.n_examples, report.errors, dict(report.error_counts)) == ("chat", 3, [], {})
    assert report.summary() == "3 examples in chat format"
    assert report.as_dict() == {"ok": True, "format": "chat", "n_examples": 3, "errors": [], "error_counts": {}}


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


@pytest.mark.parametrize("message", [
    {"role": "user", "content": "q", "weight": 1},
    {"role": "system", "content": "s", "weight": 0},
])
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


def test_dpo_sample_is_not_an_sft_format(sample_file):
    path = sample_file("dpo_en_demo.json")
    n = len(json.loads(path.read_text()))
    report = validate_file(path)
    assert not report.ok
    assert report.format is None and report.n_examples == 0
    assert dict(report.error_counts) == {"unknown_format": n}
    assert len(report.errors) == MAX_LISTED_ERRORS
    assert [e.line for e in report.errors] == list(range(1, MAX_LISTED_ERRORS + 1))
    assert "chosen, conversations, rejected" in report.errors[0].message


@pytest.mark.parametrize("name, n", [("alpaca_en_demo.json", 999), ("identity.json", 91)])
def test_real_sample_files_validate(sample_file, name, n):
    report = validate_file(sample_file(name))
    assert report.ok
    assert (report.format, report.n_examples) == ("alpaca", n)


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
