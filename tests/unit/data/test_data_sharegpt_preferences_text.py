"""ShareGPT conversations (with function_call / observation), preference pairs in four shapes, raw text."""

from __future__ import annotations

import json

import pytest

from tuneserve.data import DataError, Example, PreferenceExample, TextExample, load_examples, validate_file
from tuneserve.data.formats import normalize


def u(text):
    return {"role": "user", "content": text}


def a(text, **extra):
    return {"role": "assistant", "content": text, **extra}


def error_of(record, fmt, line=3):
    with pytest.raises(DataError) as info:
        normalize(record, fmt, line)
    assert info.value.line == line
    return info.value


# -- ShareGPT -----------------------------------------------------------------------------------


def test_sharegpt_roles(write_jsonl):
    record = {
        "system": "Be kind.",
        "conversations": [
            {"from": "human", "value": "Hi"},
            {"from": "gpt", "value": "Hello"},
            {"from": "human", "value": "Bye"},
            {"from": "gpt", "value": "Bye!"},
        ],
    }
    (example,) = load_examples(write_jsonl([record]))
    assert example.messages == ({"role": "system", "content": "Be kind."}, u("Hi"), a("Hello"), u("Bye"), a("Bye!"))
    assert example.tools == ()


def test_sharegpt_function_call_and_observation():
    record = {
        "conversations": [
            {"from": "system", "value": "You can call tools."},
            {"from": "human", "value": "Area of a 5x3 rectangle?"},
            {
                "from": "function_call",
                "value": '{"name": "calculate_area", "arguments": {"shape": "rectangle", "dimensions": [5, 3]}}',
            },
            {"from": "observation", "value": '{"area": 15}'},
            {"from": "gpt", "value": "It is 15."},
        ],
        "tools": json.dumps(
            [{"name": "calculate_area", "description": "Area", "parameters": {"type": "object", "properties": {}}}]
        ),
    }
    example = normalize(record, "sharegpt", 1)
    assert example.tools == (
        {
            "type": "function",
            "function": {"name": "calculate_area", "description": "Area", "parameters": {"type": "object", "properties": {}}},
        },
    )
    call = {
        "id": "call_0",
        "type": "function",
        "function": {"name": "calculate_area", "arguments": '{"shape": "rectangle", "dimensions": [5, 3]}'},
    }
    assert example.messages[2] == {"role": "assistant", "content": "", "tool_calls": [call]}
    assert example.messages[3] == {"role": "tool", "content": '{"area": 15}', "tool_call_id": "call_0", "name": "calculate_area"}
    assert example.trained_messages() == [example.messages[2], a("It is 15.")]


def test_sharegpt_parallel_calls_in_one_function_call_turn():
    value = json.dumps([{"name": "f", "arguments": {"a": 1}}, {"name": "g", "arguments": {}}])
    record = {
        "conversations": [
            {"from": "human", "value": "q"},
            {"from": "function_call", "value": value},
            {"from": "observation", "value": "1"},
            {"from": "observation", "value": "2"},
            {"from": "gpt", "value": "done"},
        ]
    }
    example = normalize(record, "sharegpt", 1)
    assert [c["function"]["name"] for c in example.messages[1]["tool_calls"]] == ["f", "g"]
    assert [(m["tool_call_id"], m["name"]) for m in example.messages[2:4]] == [("call_0", "f"), ("call_1", "g")]


def test_real_glaive_toolcall_sample(sample_file):
    path = sample_file("glaive_toolcall_en_demo.json")
    raw = json.loads(path.read_text())
    examples = load_examples(path)
    assert len(examples) == len(raw) == 300
    assert all(isinstance(e, Example) for e in examples)
    n_calls = sum(1 for item in raw for t in item["conversations"] if t["from"] == "function_call")
    calls = [m for e in examples for m in e.messages if m.get("tool_calls")]
    tools = [m for e in examples for m in e.messages if m["role"] == "tool"]
    assert len(calls) == len(tools) == n_calls == 211
    for example, item in zip(examples, raw):
        assert [t["function"]["name"] for t in example.tools] == [t["name"] for t in json.loads(item["tools"] or "[]")]
        for i, message in enumerate(example.messages):
            if message["role"] == "tool":  # each observation answers the call right before it
                previous = example.messages[i - 1]["tool_calls"][0]
                assert (message["tool_call_id"], message["name"]) == (previous["id"], previous["function"]["name"])
                assert (
                    json.loads(previous["function"]["arguments"])
                    == json.loads(item["conversations"][i - 1]["value"])["arguments"]
                )


@pytest.mark.parametrize(
    "turns, code, path",
    [
        (
            [{"from": "human", "value": "q"}, {"from": "bot", "value": "r"}],
            "unknown_role",
            "conversations[1].from: unknown role 'bot'",
        ),
        (
            [{"from": "human", "value": "q"}, {"from": ["gpt"], "value": "r"}],
            "unknown_role",
            "conversations[1].from: unknown role ['gpt']",
        ),
        (
            [{"from": "human", "value": "q"}, {"from": "gpt", "value": 7}],
            "invalid_content",
            "conversations[1].value must be a string",
        ),
        ([{"from": "human", "value": "q"}, "gpt: r"], "invalid_messages", "conversations[1] must be an object"),
        (
            [{"from": "human", "value": "q"}, {"from": "function_call", "value": "get_weather(Paris)"}],
            "invalid_tool_calls",
            "conversations[1].value",
        ),
        (
            [{"from": "human", "value": "q"}, {"from": "observation", "value": "21C"}, {"from": "gpt", "value": "r"}],
            "orphan_tool_message",
            "conversations[1]",
        ),
        (
            [{"from": "human", "value": "q"}, {"from": "human", "value": "q2"}, {"from": "gpt", "value": "r"}],
            "consecutive_roles",
            "conversations[1]",
        ),
        (
            [
                {"from": "human", "value": "q"},
                {"from": "gpt", "value": "r"},
                {"from": "function_call", "value": '{"name": "f", "arguments": {}}'},
            ],
            "consecutive_roles",
            "conversations[2]",
        ),
        ([], "invalid_messages", "conversations is empty"),
    ],
)
def test_sharegpt_errors(turns, code, path):
    error = error_of({"conversations": turns}, "sharegpt")
    assert error.code == code and path in str(error)


@pytest.mark.parametrize("tools, message", [("[{not json", "tools is a string but not valid JSON"), (5, "tools must be a list")])
def test_sharegpt_bad_tools(tools, message):
    error = error_of(
        {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "r"}], "tools": tools}, "sharegpt"
    )
    assert error.code == "invalid_tools" and message in str(error)


def test_sharegpt_empty_tools_string_means_none():
    example = normalize(
        {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "r"}], "tools": ""}, "sharegpt", 1
    )
    assert example.tools == ()


# -- preferences --------------------------------------------------------------------------------

PROMPT = [{"role": "system", "content": "Be nice."}, u("Say hi")]


@pytest.mark.parametrize(
    "record, fmt",
    [
        ({"input": {"messages": PROMPT}, "preferred_output": [a("Hi!")], "non_preferred_output": [a("No.")]}, "openai_dpo"),
        (
            {"input": {"messages": PROMPT}, "preferred_completion": [a("Hi!")], "non_preferred_completion": [a("No.")]},
            "openai_dpo",
        ),
        ({"prompt": PROMPT, "chosen": "Hi!", "rejected": "No."}, "chosen_rejected"),
        ({"prompt": PROMPT, "chosen": a("Hi!"), "rejected": [a("No.")]}, "chosen_rejected"),
        ({"prompt": PROMPT, "chosen": {"content": "Hi!"}, "rejected": {"content": "No."}}, "chosen_rejected"),
        (
            {
                "conversations": [{"from": "system", "value": "Be nice."}, {"from": "human", "value": "Say hi"}],
                "chosen": {"from": "gpt", "value": "Hi!"},
                "rejected": {"from": "gpt", "value": "No."},
            },
            "sharegpt_dpo",
        ),
        (
            {"system": "Be nice.", "conversations": [{"from": "human", "value": "Say hi"}], "chosen": "Hi!", "rejected": "No."},
            "sharegpt_dpo",
        ),
        ({"system": "Be nice.", "question": "Say hi", "chosen": "Hi!", "rejected": "No."}, "opea_dpo"),
    ],
)
def test_every_preference_shape_gives_the_same_pair(write_jsonl, record, fmt):
    path = write_jsonl([record] * 10)
    report = validate_file(path)
    assert report.ok, report.errors
    assert (report.format, report.kind, report.n_examples, report.duplicates) == (fmt, "preference", 10, 9)
    pair = load_examples(path)[0]
    assert isinstance(pair, PreferenceExample) and pair.kind == "preference"
    assert pair.prompt == tuple(PROMPT)
    assert (pair.chosen, pair.rejected) == (a("Hi!"), a("No."))


def test_prompt_as_a_plain_string():
    pair = normalize({"prompt": "Say hi", "chosen": "Hi!", "rejected": "No."}, "chosen_rejected", 1)
    assert (pair.prompt, pair.chosen, pair.rejected) == ((u("Say hi"),), a("Hi!"), a("No."))


def test_openai_dpo_with_tools_and_a_tool_call_answer():
    record = {
        "input": {"messages": [u("Weather?")], "tools": [{"type": "function", "function": {"name": "w"}}]},
        "preferred_output": [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "c", "type": "function", "function": {"name": "w", "arguments": "{}"}}],
            }
        ],
        "non_preferred_output": [a("I don't know.")],
    }
    pair = normalize(record, "openai_dpo", 1)
    assert pair.tools == ({"type": "function", "function": {"name": "w"}},)
    assert pair.chosen["tool_calls"][0]["function"]["name"] == "w"


@pytest.mark.parametrize(
    "record, fmt, code, text",
    [
        (
            {"input": {"messages": PROMPT}, "preferred_output": [a("x"), a("y")], "non_preferred_output": [a("z")]},
            "openai_dpo",
            "invalid_preference",
            "preferred_output must hold exactly one assistant message, got 2",
        ),
        (
            {"input": {"messages": PROMPT}, "preferred_output": [a("x")]},
            "openai_dpo",
            "missing_content",
            "'non_preferred_output' is missing",
        ),
        (
            {"input": PROMPT, "preferred_output": [a("x")], "non_preferred_output": [a("z")]},
            "openai_dpo",
            "invalid_messages",
            "input must be an object",
        ),
        (
            {"input": {"messages": PROMPT}, "preferred_output": [u("x")], "non_preferred_output": [a("z")]},
            "openai_dpo",
            "invalid_preference",
            "preferred_output[0] must be an assistant answer",
        ),
        (
            {"prompt": 3, "chosen": "c", "rejected": "r"},
            "chosen_rejected",
            "invalid_content",
            "prompt must be a string or a list",
        ),
        (
            {"prompt": "p", "chosen": "  ", "rejected": "r"},
            "chosen_rejected",
            "empty_assistant_message",
            "chosen answer is empty",
        ),
        (
            {"prompt": "p", "chosen": 1, "rejected": "r"},
            "chosen_rejected",
            "invalid_messages",
            "chosen must be an object, got a number",
        ),
        (
            {"prompt": [u("p"), a("earlier")], "chosen": "c", "rejected": "r"},
            "chosen_rejected",
            "consecutive_roles",
            "chosen is a second assistant turn",
        ),
        (
            {"prompt": [{"role": "system", "content": "s"}], "chosen": "c", "rejected": "r"},
            "chosen_rejected",
            "invalid_messages",
            "no user message",
        ),
        ({"question": "q", "chosen": "c"}, "opea_dpo", "missing_content", "'rejected' is missing"),
        ({"question": ["q"], "chosen": "c", "rejected": "r"}, "opea_dpo", "invalid_content", "question must be a string"),
        (
            {"conversations": [{"from": "human", "value": "q"}], "chosen": {"from": "human", "value": "c"}, "rejected": "r"},
            "sharegpt_dpo",
            "invalid_preference",
            "chosen must be an assistant answer",
        ),
    ],
)
def test_preference_errors(record, fmt, code, text):
    error = error_of(record, fmt)
    assert error.code == code and text in str(error)


def test_identical_chosen_and_rejected_is_a_warning():
    warnings = []
    normalize({"prompt": "p", "chosen": "same", "rejected": "same"}, "chosen_rejected", 4, warn=warnings.append)
    assert [(w.line, w.code) for w in warnings] == [(4, "identical_pair")]


# -- raw text -----------------------------------------------------------------------------------


def test_text_records(write_jsonl):
    llama3 = "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
    path = write_jsonl([{"text": "Plain document."}, {"text": llama3}] * 5 + [{"text": "Tail."}])
    records = load_examples(path)
    assert records[:2] == [TextExample("Plain document.", 1), TextExample(llama3, 2)]  # kept exactly as written
    assert all(r.kind == "text" for r in records)
    report = validate_file(path)
    assert (report.ok, report.format, report.kind, report.n_examples, report.duplicates) == (True, "text", "text", 11, 8)


@pytest.mark.parametrize(
    "record, code, text",
    [
        ({"text": ""}, "empty_text", "'text' is empty"),
        ({"text": "   \n"}, "empty_text", "'text' is empty"),
        ({"text": ["a", "b"]}, "invalid_content", "text must be a string, got a list"),
        ({"text": None}, "invalid_content", "text is null"),
    ],
)
def test_text_errors(record, code, text):
    error = error_of(record, "text")
    assert error.code == code and text in str(error)
