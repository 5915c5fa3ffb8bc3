"""Containers (JSONL, JSON array, Parquet, by content) and the issue's bad inputs: each a clear message, never a crash."""

from __future__ import annotations

import json

import pytest

from tuneserve.data import DataError, PreferenceExample, load_examples, validate_file

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

CHAT = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "r"}]}


def chats(n):
    return [{"messages": [{"role": "user", "content": f"q{k}"}, {"role": "assistant", "content": f"r{k}"}]} for k in range(n)]


def only_error(report):
    assert not report.ok
    assert len(report.errors) == 1, report.errors
    return report.errors[0]


def codes(report):
    return dict(report.warning_counts)


# -- Parquet ------------------------------------------------------------------------------------


def write_parquet(path, rows):
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_parquet_chat_with_nested_messages(tmp_path):
    rows = chats(10)
    rows[3]["messages"][1]["weight"] = 1  # the other messages get weight null in the struct column
    rows[4]["messages"].insert(
        1,
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        },
    )
    rows[4]["messages"].insert(2, {"role": "tool", "content": "ok", "tool_call_id": "c"})
    path = write_parquet(tmp_path / "chat.parquet", rows)
    report = validate_file(path)
    assert report.ok, report.errors
    assert (report.format, report.container, report.n_examples, codes(report)) == ("chat", "parquet", 10, {})
    records = load_examples(path)
    assert [r.line for r in records] == list(range(1, 11))  # row numbers
    assert records[0].messages == tuple(rows[0]["messages"])  # null struct fields count as absent
    assert records[3].messages[1] == {"role": "assistant", "content": "r3", "weight": 1}
    assert records[4].messages[1]["tool_calls"][0]["function"]["name"] == "f"
    assert records[4].messages[2] == {"role": "tool", "content": "ok", "tool_call_id": "c", "name": "f"}


def test_parquet_alpaca_with_null_input_and_preferences(tmp_path):
    alpaca = [{"instruction": f"i{k}", "input": None if k % 2 else "x", "output": "o"} for k in range(12)]
    report = validate_file(write_parquet(tmp_path / "a.parquet", alpaca))
    assert (report.ok, report.format, report.n_examples) == (True, "alpaca", 12)

    pairs = [{"prompt": f"p{k}", "chosen": "good", "rejected": "bad"} for k in range(10)]
    path = write_parquet(tmp_path / "p.parquet", pairs)
    assert (validate_file(path).format, validate_file(path).kind) == ("chosen_rejected", "preference")
    assert all(isinstance(r, PreferenceExample) for r in load_examples(path))


def test_parquet_is_detected_by_magic_bytes_not_name(tmp_path):
    path = write_parquet(tmp_path / "upload.jsonl", chats(10))
    report = validate_file(path)
    assert report.ok and report.container == "parquet"
    assert codes(report) == {"container_mismatch": 1}
    assert "named JSONL but holds Parquet" in report.warnings[0].message
    # stored uploads have no extension at all: no warning then, and the user's name can be passed instead
    bare = write_parquet(tmp_path / "file-abc123", chats(10))
    assert codes(validate_file(bare)) == {}
    assert codes(validate_file(bare, name="train.json")) == {"container_mismatch": 1}


def test_a_damaged_parquet_file_is_an_error_not_a_crash(tmp_path):
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"PAR1" + b"\x00garbage" * 100)
    error = only_error(validate_file(path))
    assert error.code == "invalid_parquet" and "not a readable Parquet file" in error.message
    with pytest.raises(DataError):
        load_examples(path)


def test_a_parquet_file_with_no_rows(tmp_path):
    path = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), path)
    assert only_error(validate_file(path)).code == "no_examples"


def test_parquet_mixed_formats_name_the_row(tmp_path):
    # one table, so every row has every column; nulls mark what a row does not have
    rows = [{"prompt": "p", "completion": "c", "text": None}] * 3 + [{"prompt": None, "completion": None, "text": "t"}]
    error = only_error(validate_file(write_parquet(tmp_path / "m.parquet", rows)))
    assert (error.code, error.line) == ("mixed_formats", 4)
    assert "text" in error.message and "prompt_completion" in error.message


# -- JSON array vs JSONL ------------------------------------------------------------------------


def test_a_pretty_printed_array_in_a_jsonl_file_is_read_with_a_warning(write_json):
    report = validate_file(write_json(chats(10), name="train.jsonl"))
    assert report.ok and (report.container, report.n_examples) == ("json", 10)
    assert codes(report) == {"container_mismatch": 1}
    assert report.warnings[0].message == "the file is named JSONL but holds one JSON array; read as json"


def test_jsonl_in_a_json_file_is_read_with_a_warning(write_jsonl):
    report = validate_file(write_jsonl(chats(10), name="train.json"))
    assert report.ok and (report.container, report.n_examples) == ("jsonl", 10)
    assert codes(report) == {"container_mismatch": 1}
    assert "named JSON but holds JSON lines" in report.warnings[0].message


def test_matching_or_unknown_extensions_warn_nothing(write_jsonl, write_json):
    for path in (
        write_jsonl(chats(10), name="a.jsonl"),
        write_json(chats(10), name="b.json"),
        write_jsonl(chats(10), name="c.txt"),
    ):
        assert codes(validate_file(path)) == {}


@pytest.mark.parametrize("name", ["one.jsonl", "one.json"])
def test_one_pretty_printed_object_gets_a_targeted_error(write_bytes, name):
    path = write_bytes(json.dumps(CHAT, indent=2).encode(), name=name)
    error = only_error(validate_file(path))
    assert (error.code, error.line) == ("invalid_json", 1)
    assert "spread over several lines" in error.message and "JSONL needs each object on one line" in error.message


# -- the bad inputs ---------------------------------------------------------------------


def test_empty_whitespace_only_beyond_the_sniff(write_bytes):
    assert only_error(validate_file(write_bytes(b" \n" * 10_000))).code == "empty_file"
    # data after a long run of blank lines is still found
    report = validate_file(write_bytes(b"\n" * 10_000 + (json.dumps(CHAT) + "\n").encode()))
    assert report.ok and report.n_examples == 1


def test_binary_file(write_bytes):
    error = only_error(validate_file(write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))))
    assert error.code == "invalid_file_encoding" and "binary" in error.message


def test_utf16_file(write_bytes):
    error = only_error(validate_file(write_bytes((json.dumps(CHAT) + "\n").encode("utf-16"))))
    assert error.code == "invalid_file_encoding" and "UTF-16" in error.message


def test_non_utf8_names_the_line_and_byte(write_bytes):
    body = b"".join((json.dumps(r) + "\n").encode() for r in chats(4)) + b'{"text": "na\xefve"}\n'
    error = only_error(validate_file(write_bytes(body)))
    assert (error.code, error.line) == ("invalid_file_encoding", 5)
    assert "not valid UTF-8" in error.message and "0xef" in error.message


@pytest.mark.parametrize(
    "name, dump", [("bom.jsonl", lambda rs: "".join(json.dumps(r) + "\n" for r in rs)), ("bom.json", json.dumps)]
)
def test_utf8_bom_is_accepted_with_a_warning(write_bytes, name, dump):
    report = validate_file(write_bytes(b"\xef\xbb\xbf" + dump(chats(10)).encode(), name=name))
    assert report.ok and report.n_examples == 10
    assert codes(report) == {"utf8_bom": 1}
    assert (report.warnings[0].line, "byte order mark" in report.warnings[0].message) == (1, True)


def test_a_10_mb_single_line(write_bytes):
    big = {"messages": [{"role": "user", "content": "x" * 10_000_000}, {"role": "assistant", "content": "ok"}]}
    line = json.dumps(big)
    report = validate_file(write_bytes((line + "\n").encode() + (json.dumps(CHAT) + "\n").encode()))
    assert report.ok and report.n_examples == 2

    broken = line[:-2] + ",}" + "\n"  # a trailing comma before the last brace
    report = validate_file(write_bytes(broken.encode() + (json.dumps(CHAT) + "\n").encode()))
    error = only_error(report)
    assert (error.code, error.line) == ("invalid_json", 1)
    assert error.message.startswith("invalid JSON:") and f"column {len(line)}" in error.message
    assert len(error.message) < 200 and "xxxx" not in error.message  # the 10 MB line is never echoed

    truncated = line[: len(line) // 2]  # cut mid-line: the object is never closed
    error = only_error(validate_file(write_bytes(truncated.encode() + b"\n")))
    assert (error.code, error.line) == ("invalid_json", 1) and len(error.message) < 200


def test_mixed_formats_name_the_line_and_both_formats(write_jsonl):
    report = validate_file(write_jsonl([*chats(3), {"text": "t"}, {"instruction": "i", "output": "o"}, *chats(1)]))
    assert dict(report.error_counts) == {"mixed_formats": 2}
    first, second = report.errors
    assert first.line == 4 and "this record is text but the file started as chat (line 1)" in first.message
    assert second.line == 5 and "alpaca" in second.message
    assert (report.format, report.n_examples) == ("chat", 4)


def test_mixed_sft_and_preference_in_a_json_array(write_json):
    items = [{"prompt": "p", "completion": "c"}, {"prompt": "p", "chosen": "c", "rejected": "r"}]
    error = only_error(validate_file(write_json(items)))
    assert (error.code, error.line) == ("mixed_formats", 2)
    assert "chosen_rejected" in error.message and "prompt_completion" in error.message


@pytest.mark.parametrize(
    "record, code, path",
    [
        (
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": 5}]},
            "invalid_content",
            "messages[1].content",
        ),
        ({"messages": {"role": "user"}}, "invalid_messages", "messages must be a list"),
        (
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "r", "weight": 2}]},
            "invalid_weight",
            "messages[1].weight",
        ),
        (
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "r"}], "tools": "get_weather"},
            "invalid_tools",
            "tools is a string but not valid JSON",
        ),
        ({"prompt": "p", "completion": 3}, "invalid_content", "completion must be a string"),
        ({"instruction": "i", "output": "o", "history": [["q", 1]]}, "invalid_content", "history[0]"),
        ({"conversations": [{"from": "human", "value": None}]}, "invalid_content", "conversations[0].value is null"),
    ],
)
def test_wrong_value_types_in_a_file(write_jsonl, record, code, path):
    fmt_first = {"messages": CHAT["messages"]} if "messages" in record else None
    records = [fmt_first, record] if fmt_first else [record]
    error = only_error(validate_file(write_jsonl(records)))
    assert (error.code, error.line) == (code, len(records))
    assert path in error.message


def test_consecutive_user_turns_are_an_error_and_a_late_system_a_warning(write_jsonl):
    double = {
        "messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "assistant", "content": "r"}]
    }
    late = {
        "messages": [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "r"},
            {"role": "system", "content": "s"},
            {"role": "user", "content": "b"},
            {"role": "assistant", "content": "r2"},
        ]
    }
    report = validate_file(write_jsonl([*chats(10), double, late]))
    error = only_error(report)
    assert (error.code, error.line) == ("consecutive_roles", 11)
    assert codes(report) == {"system_not_first": 1}
    assert report.warnings[0].line == 12 and report.n_examples == 11
