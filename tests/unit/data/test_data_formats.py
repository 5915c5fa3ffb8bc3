"""Format detection and normalization: every supported input format becomes chat-shaped Examples."""

from __future__ import annotations

import json

import pytest

from tuneserve.data import DataError, Example, PreferenceExample, count_examples, iter_examples, load_examples
from tuneserve.data.containers import read_records
from tuneserve.data.formats import detect_format, normalize


def u(text):
    return {"role": "user", "content": text}


def a(text, **extra):
    return {"role": "assistant", "content": text, **extra}


# -- detection ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "record, expected",
    [
        ({"messages": [u("q"), a("r")]}, "chat"),
        ({"prompt": "p", "completion": "c"}, "prompt_completion"),
        ({"instruction": "i", "output": "o"}, "alpaca"),
        ({"instruction": "i", "input": "x", "output": "o", "system": "s", "history": []}, "alpaca"),
        ({"prompt": "p"}, None),
        ({"instruction": "i"}, None),
        ({"conversations": [], "chosen": {}, "rejected": {}}, "sharegpt_dpo"),
        ({"conversations": []}, "sharegpt"),
        ({"text": "t"}, "text"),
        ({"input": {"messages": []}, "preferred_output": [], "non_preferred_output": []}, "openai_dpo"),
        ({"input": {"messages": []}, "preferred_completion": [], "non_preferred_completion": []}, "openai_dpo"),
        ({"prompt": "p", "chosen": "c", "rejected": "r"}, "chosen_rejected"),
        ({"question": "q", "chosen": "c", "rejected": "r", "system": "s"}, "opea_dpo"),
        ({"question": "q", "answer": "a"}, None),
        (["not", "a", "dict"], None),
        ("text", None),
    ],
)
def test_detect_format(record, expected):
    assert detect_format(record) == expected


# -- chat ---------------------------------------------------------------------------------


def test_chat_jsonl_normalized_with_weights(write_jsonl):
    records = [
        {"messages": [{"role": "system", "content": "Be brief."}, u("Hi"), a("Hello!")]},
        {"messages": [u("2+2?"), a("5", weight=0), u("Really?"), a("4", weight=1)]},
    ]
    examples = load_examples(write_jsonl(records))

    assert [e.line for e in examples] == [1, 2]
    first, second = examples
    assert first.messages == ({"role": "system", "content": "Be brief."}, u("Hi"), a("Hello!"))
    assert first.trained_messages() == [a("Hello!")]
    # weight 0 keeps the turn as context but out of training; weight 1 trains it
    assert second.messages[1] == {"role": "assistant", "content": "5", "weight": 0}
    assert second.messages[3] == {"role": "assistant", "content": "4", "weight": 1}
    assert second.trained_messages() == [{"role": "assistant", "content": "4", "weight": 1}]


def test_chat_drops_unknown_message_keys_and_warns(write_jsonl):
    records = [{"messages": [{"role": "user", "content": "q", "name": "bob"}, {"role": "assistant", "content": "r", "extra": 1}]}]
    (example,) = load_examples(write_jsonl(records))
    assert example.messages == (u("q"), a("r"))  # "name" is known (dropped quietly off non-tool turns), "extra" is not
    warnings = []
    normalize(records[0], "chat", 1, warn=warnings.append)
    assert [(w.line, w.code) for w in warnings] == [(1, "unknown_message_key")]
    assert "messages[1].extra" in warnings[0].message


def test_blank_lines_are_skipped_and_line_numbers_stay_true(write_bytes):
    line = json.dumps({"messages": [u("q"), a("r")]})
    path = write_bytes(f"\n{line}\n\n   \n{line}\n".encode())
    assert [e.line for e in iter_examples(path)] == [2, 5]


def test_utf8_bom_on_jsonl_is_accepted(write_bytes):
    line = json.dumps({"messages": [u("q"), a("r")]})
    path = write_bytes(b"\xef\xbb\xbf" + line.encode() + b"\n")
    assert [e.messages for e in iter_examples(path)] == [(u("q"), a("r"))]


# -- prompt / completion ------------------------------------------------------------------


def test_prompt_completion_becomes_user_and_assistant(write_jsonl):
    path = write_jsonl([{"prompt": "Capital of France?", "completion": " Paris."}, {"prompt": "1+1", "completion": "2"}])
    examples = load_examples(path)
    assert [e.messages for e in examples] == [
        (u("Capital of France?"), a(" Paris.")),
        (u("1+1"), a("2")),
    ]
    assert all(e.trained_messages() == [e.messages[1]] for e in examples)


# -- alpaca -------------------------------------------------------------------------------

ALPACA = [
    {"instruction": "Translate to French.", "input": "cat", "output": "chat"},
    {"instruction": "Say hi.", "input": "", "output": "Hi!"},
    {
        "instruction": "And now?",
        "output": "Bye.",
        "system": "You are terse.",
        "history": [["First question", "First answer"], ["Second", "Second answer"]],
    },
]


def _check_alpaca(examples: list[Example]):
    one, two, three = examples
    # a non-empty input joins the instruction after a blank line
    assert one.messages == (u("Translate to French.\n\ncat"), a("chat"))
    # an empty input adds nothing
    assert two.messages == (u("Say hi."), a("Hi!"))
    # system first, then each history pair as user/assistant turns, then the record's own turn
    assert three.messages == (
        {"role": "system", "content": "You are terse."},
        u("First question"),
        a("First answer"),
        u("Second"),
        a("Second answer"),
        u("And now?"),
        a("Bye."),
    )
    assert len(three.trained_messages()) == 3


def test_alpaca_json_array(write_json):
    examples = load_examples(write_json(ALPACA))
    assert [e.line for e in examples] == [1, 2, 3]  # item numbers in the array
    _check_alpaca(examples)


def test_alpaca_jsonl(write_jsonl):
    examples = load_examples(write_jsonl(ALPACA))
    assert [e.line for e in examples] == [1, 2, 3]
    _check_alpaca(examples)


def test_alpaca_json_array_with_utf8_bom(write_bytes):
    path = write_bytes(b"\xef\xbb\xbf" + json.dumps(ALPACA, indent=2).encode(), name="bom.json")
    _check_alpaca(load_examples(path))


@pytest.mark.parametrize(
    "bad, code",
    [
        ({"instruction": "i", "output": "o", "history": [["only one"]]}, "invalid_content"),
        ({"instruction": "i", "output": "o", "history": "q/a"}, "invalid_content"),
        ({"instruction": "i", "output": "o", "input": 3}, "invalid_content"),
        ({"instruction": "i", "output": "o", "system": ["s"]}, "invalid_content"),
        ({"instruction": "i", "output": None}, "invalid_content"),
        ({"instruction": "i", "output": "   "}, "empty_assistant_message"),
    ],
)
def test_alpaca_bad_records(bad, code):
    with pytest.raises(DataError) as info:
        normalize(bad, "alpaca", 7)
    assert info.value.code == code
    assert info.value.line == 7
    assert str(info.value).startswith("line 7: ")


# -- real sample data ----------------------------------------------------------------------


def test_real_alpaca_en_demo(sample_file):
    path = sample_file("alpaca_en_demo.json")
    raw = json.loads(path.read_text())
    examples = load_examples(path)
    assert len(examples) == len(raw) == 999
    assert count_examples(path) == 999
    for example, record in zip(examples[:50], raw[:50]):
        prompt = record["instruction"] + (f"\n\n{record['input']}" if record["input"] else "")
        assert example.messages == (u(prompt), a(record["output"]))


def test_real_identity(sample_file):
    path = sample_file("identity.json")
    examples = load_examples(path)
    assert len(examples) == 91
    assert examples[0].messages[0]["content"] == json.loads(path.read_text())[0]["instruction"]
    assert all(e.trained_messages() for e in examples)


def test_real_dpo_file_is_sharegpt_preference_pairs(sample_file):
    path = sample_file("dpo_en_demo.json")
    raw = json.loads(path.read_text())
    records = load_examples(path)
    assert len(records) == len(raw) == 300
    assert all(isinstance(r, PreferenceExample) and r.kind == "preference" for r in records)
    roles = {"human": "user", "gpt": "assistant", "system": "system"}
    for record, item in zip(records, raw):
        assert record.prompt == tuple({"role": roles[t["from"]], "content": t["value"]} for t in item["conversations"])
        assert record.chosen == a(item["chosen"]["value"])
        assert record.rejected == a(item["rejected"]["value"])
        assert record.prompt[-1]["role"] == "user"


# -- errors from the readers ---------------------------------------------------------------


def test_json_array_item_numbers_name_the_bad_item(write_json):
    items = (
        [{"instruction": "i", "output": "o"}] * 3 + [{"instruction": "i", "output": 42}] + [{"instruction": "i", "output": "o"}]
    )
    with pytest.raises(DataError) as info:
        load_examples(write_json(items))
    assert (info.value.line, info.value.code) == (4, "invalid_content")


def test_a_json_document_that_is_not_an_array(write_bytes):
    path = write_bytes(b'"just a string"', name="x.json")
    with pytest.raises(DataError) as info:
        load_examples(path)
    assert info.value.code == "unknown_format"  # a JSONL line holding a string, not an object


def test_no_examples_is_an_error(write_json):
    with pytest.raises(DataError) as info:
        load_examples(write_json([]))
    assert info.value.code == "no_examples"


def test_iter_examples_is_lazy_and_stops_at_first_bad_line(write_jsonl):
    good = {"messages": [u("q"), a("r")]}
    path = write_jsonl([good, good, {"messages": [u("q"), {"role": "bot", "content": "r"}]}, good])
    it = iter_examples(path)
    assert next(it).line == 1
    assert next(it).line == 2
    with pytest.raises(DataError) as info:
        next(it)
    assert (info.value.line, info.value.code) == (3, "unknown_role")


def test_read_records_reports_broken_json_line_in_array(write_bytes):
    text = '[\n  {"instruction": "i", "output": "o"},\n  {"instruction": "i" "output": "o"}\n]\n'
    with pytest.raises(DataError) as info:
        list(read_records(write_bytes(text.encode(), name="broken.json")))
    assert (info.value.line, info.value.code) == (3, "invalid_json")
