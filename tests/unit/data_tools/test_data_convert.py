"""convert_file: every direction between chat, prompt-completion and alpaca keeps what is trained,
--system, --split (exact, disjoint, seeded), the alpaca demo -> OCI prompt/completion in one call,
and the records a target cannot hold."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from tests.unit.data_tools.conftest import read_jsonl
from tuneserve.data import iter_examples
from tuneserve.data import convert as convert_module
from tuneserve.data.convert import convert_file, validation_path
from tuneserve.data.records import DataError, Example, PreferenceExample, TextExample


def conversations(path) -> list[list[dict]]:
    """What training sees: the normalized messages of every example."""
    return [list(e.messages) for e in iter_examples(path)]


def single_turn(n: int) -> list[dict]:
    return [
        {"messages": [{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": f"Answer {i}."}]}
        for i in range(n)
    ]


MULTI = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "One?"},
        {"role": "assistant", "content": "1."},
        {"role": "user", "content": "Two?"},
        {"role": "assistant", "content": "2."},
    ]
}


def test_chat_to_alpaca_and_back_keeps_every_conversation(write_jsonl, tmp_path):
    src = write_jsonl([MULTI, *single_turn(3)], "chat.jsonl")
    alpaca, back = tmp_path / "alpaca.jsonl", tmp_path / "back.jsonl"

    assert convert_file(src, alpaca, to="alpaca")["written"] == 4
    records = read_jsonl(alpaca)
    assert records[0] == {"instruction": "Two?", "input": "", "output": "2.", "system": "Be brief.", "history": [["One?", "1."]]}
    assert records[1] == {"instruction": "Question 0?", "input": "", "output": "Answer 0."}

    convert_file(alpaca, back, to="chat")
    assert read_jsonl(back) == [MULTI, *single_turn(3)]
    assert conversations(src) == conversations(alpaca) == conversations(back)


def test_prompt_completion_to_chat_and_back_is_identical(write_jsonl, tmp_path):
    records = [{"prompt": f"p{i}", "completion": f"c{i}"} for i in range(5)]
    src = write_jsonl(records, "pc.jsonl")
    chat, back = tmp_path / "chat.jsonl", tmp_path / "back.jsonl"
    convert_file(src, chat, to="chat")
    assert read_jsonl(chat)[0] == {"messages": [{"role": "user", "content": "p0"}, {"role": "assistant", "content": "c0"}]}
    convert_file(chat, back, to="prompt-completion")
    assert read_jsonl(back) == records
    assert conversations(src) == conversations(chat) == conversations(back)


def test_alpaca_to_prompt_completion_and_back(write_jsonl, tmp_path):
    src = write_jsonl(
        [{"instruction": "Add", "input": "1+1", "output": "2"}, {"instruction": "Hi", "output": "Hello"}], "a.jsonl"
    )
    pc, back = tmp_path / "pc.jsonl", tmp_path / "back.jsonl"
    convert_file(src, pc, to="prompt-completion")
    assert read_jsonl(pc) == [{"prompt": "Add\n\n1+1", "completion": "2"}, {"prompt": "Hi", "completion": "Hello"}]
    convert_file(pc, back, to="alpaca")
    assert read_jsonl(back) == [
        {"instruction": "Add\n\n1+1", "input": "", "output": "2"},
        {"instruction": "Hi", "input": "", "output": "Hello"},
    ]
    assert conversations(src) == conversations(pc) == conversations(back)


def test_alpaca_demo_to_oci_prompt_completion_in_one_call(alpaca_demo, tmp_path):
    """The seed's finance-alpaca -> OCI conversion: an alpaca JSON array in, prompt/completion JSONL out."""
    out = tmp_path / "oci.jsonl"
    summary = convert_file(alpaca_demo, out, to="prompt-completion")
    assert summary == {
        "written": 999,
        "validation_written": 0,
        "skipped": 0,
        "skipped_lines": [],
        "out": str(out),
        "valid_out": None,
    }
    source = json.loads(alpaca_demo.read_text(encoding="utf-8"))
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 999
    written = [json.loads(line) for line in lines]
    assert all(set(r) == {"prompt", "completion"} for r in written)
    assert written[0]["prompt"] == source[0]["instruction"] + source[0]["input"]  # its input is ""
    with_input = next(i for i, r in enumerate(source) if r["input"])
    assert written[with_input]["prompt"] == f"{source[with_input]['instruction']}\n\n{source[with_input]['input']}"
    assert [r["completion"] for r in written] == [r["output"] for r in source]
    assert conversations(out) == conversations(alpaca_demo)


@pytest.mark.parametrize("name", ["dpo_en_demo.json", "glaive_toolcall_en_demo.json", "identity.json"])
def test_sample_files_round_trip_through_chat(sample, tmp_path, name):
    """Preference pairs (OpenAI's preference shape) and tool calls survive --to chat unchanged."""
    src = sample(name)
    out = tmp_path / "chat.jsonl"
    summary = convert_file(src, out, to="chat")
    assert summary["written"] == len(json.loads(src.read_text(encoding="utf-8")))
    assert list(iter_examples(out)) == [replace(e, line=i) for i, e in enumerate(iter_examples(src), start=1)]


def test_system_is_added_or_replaced(write_jsonl, tmp_path):
    src = write_jsonl([MULTI, *single_turn(1)], "in.jsonl")
    chat, alpaca = tmp_path / "chat.jsonl", tmp_path / "alpaca.jsonl"
    convert_file(src, chat, to="chat", system="You are a banker.")
    first, second = [r["messages"] for r in read_jsonl(chat)]
    assert first[0] == {"role": "system", "content": "You are a banker."} and first[1:] == MULTI["messages"][1:]
    assert second[0] == {"role": "system", "content": "You are a banker."} and second[1:] == single_turn(1)[0]["messages"]

    convert_file(src, alpaca, to="alpaca", system="You are a banker.")
    assert [r["system"] for r in read_jsonl(alpaca)] == ["You are a banker."] * 2

    pc_src = write_jsonl([{"prompt": "p", "completion": "c"}], "pc.jsonl")
    pc = tmp_path / "pc_out.jsonl"
    convert_file(pc_src, pc, to="prompt-completion", system="You are a banker.")
    assert read_jsonl(pc) == [{"prompt": "You are a banker.\n\np", "completion": "c"}]


def test_an_existing_system_message_is_prepended_to_the_prompt(write_jsonl, tmp_path):
    src = write_jsonl(
        [
            {
                "messages": [
                    {"role": "system", "content": "S"},
                    {"role": "user", "content": "U"},
                    {"role": "assistant", "content": "A"},
                ]
            }
        ]
    )
    out = tmp_path / "pc.jsonl"
    convert_file(src, out, to="prompt-completion")
    assert read_jsonl(out) == [{"prompt": "S\n\nU", "completion": "A"}]


def test_chat_to_chat_keeps_weights(write_jsonl, tmp_path):
    record = {
        "messages": [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b", "weight": 0},
            {"role": "user", "content": "c"},
            {"role": "assistant", "content": "d", "weight": 1},
        ]
    }
    out = tmp_path / "out.jsonl"
    convert_file(write_jsonl([record]), out, to="chat")
    assert read_jsonl(out) == [record]


def test_split_is_exact_disjoint_order_keeping_and_seeded(write_jsonl, tmp_path):
    src = write_jsonl([{"prompt": f"p{i}", "completion": f"c{i}"} for i in range(20)], "pc.jsonl")
    out = tmp_path / "train.jsonl"
    summary = convert_file(src, out, to="chat", split=0.25, seed=7)
    assert summary["written"] == 15 and summary["validation_written"] == 5
    assert summary["valid_out"] == str(tmp_path / "train.valid.jsonl")
    train = [r["messages"][0]["content"] for r in read_jsonl(out)]
    valid = [r["messages"][0]["content"] for r in read_jsonl(tmp_path / "train.valid.jsonl")]
    assert len(train) == 15 and len(valid) == 5 and not set(train) & set(valid)
    assert sorted(train + valid, key=lambda p: int(p[1:])) == [f"p{i}" for i in range(20)]
    assert train == sorted(train, key=lambda p: int(p[1:])) and valid == sorted(valid, key=lambda p: int(p[1:]))

    again = tmp_path / "again.jsonl"
    convert_file(src, again, to="chat", split=0.25, seed=7)
    assert again.read_bytes() == out.read_bytes()
    assert (tmp_path / "again.valid.jsonl").read_bytes() == (tmp_path / "train.valid.jsonl").read_bytes()
    other = tmp_path / "other.jsonl"
    convert_file(src, other, to="chat", split=0.25, seed=8)
    assert (tmp_path / "other.valid.jsonl").read_bytes() != (tmp_path / "train.valid.jsonl").read_bytes()


@pytest.mark.parametrize("n,split,valid", [(10, 0.1, 1), (10, 0.01, 1), (10, 0.99, 9), (3, 0.5, 2), (999, 0.1, 100)])
def test_split_sizes(write_jsonl, tmp_path, n, split, valid):
    src = write_jsonl([{"prompt": f"p{i}", "completion": "c"} for i in range(n)])
    summary = convert_file(src, tmp_path / "o.jsonl", to="prompt-completion", split=split)
    assert (summary["written"], summary["validation_written"]) == (n - valid, valid)


def test_validation_file_naming(tmp_path):
    assert validation_path(tmp_path / "train.jsonl") == tmp_path / "train.valid.jsonl"
    assert validation_path(tmp_path / "train.json") == tmp_path / "train.valid.jsonl"
    assert validation_path(tmp_path / "train") == tmp_path / "train.valid.jsonl"
    assert validation_path(tmp_path / "a.b.jsonl") == tmp_path / "a.b.valid.jsonl"


def test_multi_turn_to_prompt_completion_is_refused_naming_the_line_and_writes_nothing(write_jsonl, tmp_path):
    src = write_jsonl([*single_turn(2), MULTI])
    out = tmp_path / "out.jsonl"
    out.write_text("old\n")
    with pytest.raises(DataError, match="multi-turn") as info:
        convert_file(src, out, to="prompt-completion", split=0.5)
    assert info.value.line == 3 and str(info.value).startswith("line 3:")
    assert out.read_text() == "old\n"  # untouched: written atomically
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.jsonl", "out.jsonl"]  # no temporary left behind


def test_unconvertible_records_can_be_skipped_and_counted(write_jsonl, tmp_path):
    src = write_jsonl([*single_turn(2), MULTI, *single_turn(1), MULTI])
    out = tmp_path / "out.jsonl"
    summary = convert_file(src, out, to="prompt-completion", skip_unconvertible=True)
    assert (summary["written"], summary["skipped"], summary["skipped_lines"]) == (3, 2, [3, 5])
    summary = convert_file(src, out, to="prompt-completion", skip_unconvertible=True, split=0.34)
    assert (summary["written"], summary["validation_written"], summary["skipped"]) == (2, 1, 2)
    with pytest.raises(DataError, match="no example could be converted; the first refusal: line 1: cannot convert a multi-turn"):
        convert_file(write_jsonl([MULTI], "multi.jsonl"), out, to="prompt-completion", skip_unconvertible=True)


def test_bad_input_raises_the_readers_error(write_jsonl, tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_text(json.dumps(single_turn(1)[0]) + "\n{not json\n")
    with pytest.raises(DataError) as info:
        convert_file(src, tmp_path / "out.jsonl", to="alpaca")
    assert info.value.line == 2 and not (tmp_path / "out.jsonl").exists()


def test_bad_arguments(write_jsonl, tmp_path):
    src = write_jsonl(single_turn(3))
    with pytest.raises(ValueError, match="target"):
        convert_file(src, tmp_path / "o.jsonl", to="sharegpt")
    for split in (0, 1, 1.5, -0.1):
        with pytest.raises(ValueError, match="split"):
            convert_file(src, tmp_path / "o.jsonl", to="chat", split=split)
    with pytest.raises(ValueError, match="overwrite"):
        convert_file(src, src, to="chat")
    with pytest.raises(DataError, match="at least 2"):
        convert_file(write_jsonl(single_turn(1), "one.jsonl"), tmp_path / "o.jsonl", to="chat", split=0.5)


# Records formats.py may yield for other input formats (tools, preference pairs, raw text): fed in directly.
TOOLS = ({"type": "function", "function": {"name": "get_rate", "parameters": {"type": "object", "properties": {}}}},)
TOOL_CHAT = Example(
    messages=(
        {"role": "user", "content": "Rate?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_rate", "arguments": "{}"}}],
        },
        {"role": "tool", "content": "5%", "tool_call_id": "c1"},
        {"role": "assistant", "content": "It is 5%."},
    ),
    line=1,
    tools=TOOLS,
)
PAIR = PreferenceExample(
    prompt=({"role": "user", "content": "Hi?"},),
    chosen={"role": "assistant", "content": "Hello!"},
    rejected={"role": "assistant", "content": "Go away."},
    line=1,
)


@pytest.fixture
def records(monkeypatch, tmp_path):
    """records([...]) -> a source path whose reading yields exactly those records."""

    def _feed(items):
        monkeypatch.setattr(convert_module, "iter_examples", lambda _path: iter(items))
        src = tmp_path / "src.jsonl"
        src.write_text("{}\n")
        return src

    return _feed


def test_tools_and_tool_calls_survive_chat_and_are_refused_elsewhere(records, tmp_path):
    src = records([TOOL_CHAT])
    convert_file(src, tmp_path / "chat.jsonl", to="chat")
    assert read_jsonl(tmp_path / "chat.jsonl") == [{"messages": [dict(m) for m in TOOL_CHAT.messages], "tools": list(TOOLS)}]
    for target in ("alpaca", "prompt-completion"):
        with pytest.raises(DataError, match="tools") as info:
            convert_file(src, tmp_path / "x.jsonl", to=target)
        assert info.value.line == 1


def test_preference_pairs_become_openai_preference_records_and_nothing_else(records, tmp_path):
    src = records([PAIR])
    summary = convert_file(src, tmp_path / "dpo.jsonl", to="chat", system="Be kind.")
    assert summary["written"] == 1
    assert read_jsonl(tmp_path / "dpo.jsonl") == [
        {
            "input": {"messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi?"}]},
            "preferred_output": [{"role": "assistant", "content": "Hello!"}],
            "non_preferred_output": [{"role": "assistant", "content": "Go away."}],
        }
    ]
    for target in ("alpaca", "prompt-completion"):
        with pytest.raises(DataError, match="preference pair"):
            convert_file(src, tmp_path / "x.jsonl", to=target)


@pytest.mark.parametrize("target", ["chat", "alpaca", "prompt-completion"])
def test_raw_text_converts_to_nothing(records, tmp_path, target):
    with pytest.raises(DataError, match="raw text") as info:
        convert_file(records([TextExample(text="Once upon a time", line=4)]), tmp_path / "x.jsonl", to=target)
    assert info.value.line == 4 and not (tmp_path / "x.jsonl").exists()


@pytest.mark.parametrize(
    "messages,why",
    [
        (
            [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "b", "weight": 0},
                {"role": "user", "content": "c"},
                {"role": "assistant", "content": "d"},
            ],
            "weight 0",
        ),
        (
            [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "assistant", "content": "c"}],
            "message 2 is user",
        ),
        (
            [
                {"role": "system", "content": "s"},
                {"role": "assistant", "content": "a"},
                {"role": "user", "content": "b"},
                {"role": "assistant", "content": "c"},
            ],
            "message 2 is assistant",
        ),
        ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}], "pairs"),
    ],
)
def test_conversations_alpaca_cannot_hold_are_refused(records, tmp_path, messages, why):
    """Checked on the records themselves: the reader may already refuse some of these shapes."""
    ok = Example(messages=({"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}), line=1)
    with pytest.raises(DataError, match=why) as info:
        convert_file(records([ok, Example(messages=tuple(messages), line=2)]), tmp_path / "out.jsonl", to="alpaca")
    assert info.value.line == 2 and info.value.code == "unconvertible_record"
    assert not (tmp_path / "out.jsonl").exists()
