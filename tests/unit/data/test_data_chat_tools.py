"""OpenAI chat records: tools and tool calls, legacy function calling, roles, content parts, turn order."""

from __future__ import annotations

import json

import pytest

from tuneserve.data import DataError, Example, load_examples
from tuneserve.data.formats import normalize

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def call(name="get_weather", arguments='{"city": "Paris"}', id="call_abc"):
    out = {"type": "function", "function": {"name": name, "arguments": arguments}}
    return {"id": id, **out} if id is not None else out


def norm(record, line=1):
    warnings = []
    example = normalize(record, "chat", line, warn=warnings.append)
    return example, warnings


def error_of(record, line=5):
    with pytest.raises(DataError) as info:
        normalize(record, "chat", line)
    assert info.value.line == line and str(info.value).startswith(f"line {line}: ")
    return info.value


def test_tool_calling_conversation(write_jsonl):
    record = {
        "messages": [
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {"role": "assistant", "content": None, "tool_calls": [call(id="c1"), call(arguments='{"city": "Rome"}', id="c2")]},
            {"role": "tool", "tool_call_id": "c2", "content": "18C"},
            {"role": "tool", "tool_call_id": "c1", "content": "21C"},
            {"role": "assistant", "content": "Paris 21C, Rome 18C."},
        ],
        "tools": [WEATHER_TOOL],
        "parallel_tool_calls": True,
    }
    (example,) = load_examples(write_jsonl([record]))
    assert isinstance(example, Example) and example.tools == (WEATHER_TOOL,)
    user, calling, tool_a, tool_b, answer = example.messages
    assert calling == {
        "role": "assistant",
        "content": "",
        "tool_calls": [call(id="c1"), call(arguments='{"city": "Rome"}', id="c2")],
    }
    # tool answers keep their ids (in any order) and learn the called function's name
    assert tool_a == {"role": "tool", "content": "18C", "tool_call_id": "c2", "name": "get_weather"}
    assert tool_b == {"role": "tool", "content": "21C", "tool_call_id": "c1", "name": "get_weather"}
    # both assistant turns train; tool outputs never do
    assert example.trained_messages() == [calling, answer]


def test_missing_ids_are_generated_and_tool_messages_linked_in_order():
    record = {
        "messages": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "", "tool_calls": [call(id=None), call(name="other", arguments={"x": 1}, id=None)]},
            {"role": "tool", "content": "one"},
            {"role": "tool", "content": "two"},
            {"role": "assistant", "content": "done"},
        ]
    }
    example, warnings = norm(record)
    calls = example.messages[1]["tool_calls"]
    assert [c["id"] for c in calls] == ["call_0", "call_1"]
    assert calls[1]["function"]["arguments"] == '{"x": 1}'  # an object is serialized: OpenAI's shape is a JSON string
    assert [(m["tool_call_id"], m["name"]) for m in example.messages[2:4]] == [("call_0", "get_weather"), ("call_1", "other")]
    assert warnings == []


def test_conversation_may_end_on_a_tool_call():
    example, _ = norm({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [call()]}]})
    assert example.trained_messages()[0]["tool_calls"] == [call()]
    assert example.messages[1]["content"] == ""


def test_legacy_function_calling_becomes_tools():
    record = {
        "messages": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": None, "function_call": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}},
            {"role": "function", "name": "get_weather", "content": "3C"},
            {"role": "assistant", "content": "3C in Oslo."},
        ],
        "functions": [WEATHER_TOOL["function"]],
    }
    example, warnings = norm(record)
    assert example.tools == (WEATHER_TOOL,)
    assert example.messages[1]["tool_calls"] == [{"id": "call_0", **call(arguments='{"city": "Oslo"}', id=None)}]
    assert example.messages[2] == {"role": "tool", "content": "3C", "name": "get_weather", "tool_call_id": "call_0"}
    assert warnings == []


def test_developer_role_is_system_and_text_parts_are_joined():
    record = {
        "messages": [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}]},
            {"role": "assistant", "content": "Hi."},
        ]
    }
    example, _ = norm(record)
    assert example.messages == (
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello there"},
        {"role": "assistant", "content": "Hi."},
    )


def test_bare_tool_definitions_are_wrapped():
    example, _ = norm(
        {
            "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "r"}],
            "tools": [WEATHER_TOOL["function"]],
        }
    )
    assert example.tools == (WEATHER_TOOL,)


# -- turn order ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "roles, where",
    [
        (["user", "user", "assistant"], "messages[1]"),
        (["user", "assistant", "assistant"], "messages[2]"),
        (["system", "user", "assistant", "user", "user", "assistant"], "messages[4]"),
    ],
)
def test_two_user_or_two_assistant_turns_in_a_row_are_an_error(roles, where):
    error = error_of({"messages": [{"role": r, "content": f"{r} {i}"} for i, r in enumerate(roles)]})
    assert error.code == "consecutive_roles"
    assert where in str(error) and "in a row" in str(error)


def test_a_late_system_message_is_a_warning():
    example, warnings = norm(
        {
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "system", "content": "s"},
                {"role": "assistant", "content": "r"},
            ]
        }
    )
    assert [(w.line, w.code) for w in warnings] == [(1, "system_not_first")]
    assert "messages[1]" in warnings[0].message
    assert len(example.messages) == 3


def test_two_leading_system_messages_are_fine():
    _, warnings = norm(
        {
            "messages": [
                {"role": "system", "content": "a"},
                {"role": "system", "content": "b"},
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "r"},
            ]
        }
    )
    assert warnings == []


@pytest.mark.parametrize(
    "messages, code, where",
    [
        (
            [{"role": "user", "content": "q"}, {"role": "tool", "content": "x"}, {"role": "assistant", "content": "r"}],
            "orphan_tool_message",
            "messages[1]",
        ),
        (
            [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "", "tool_calls": [call(id="c1")]},
                {"role": "tool", "tool_call_id": "nope", "content": "x"},
            ],
            "orphan_tool_message",
            "messages[2].tool_call_id",
        ),
        (
            [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "", "tool_calls": [call(id="c1")]},
                {"role": "tool", "content": "x"},
                {"role": "tool", "content": "y"},
            ],
            "orphan_tool_message",
            "messages[3]",
        ),
        (
            [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "", "tool_calls": [call(id="c1"), call(id="c2")]},
                {"role": "tool", "content": "x"},
                {"role": "assistant", "content": "r"},
            ],
            "unanswered_tool_call",
            "messages[3]",
        ),
        (
            [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "", "tool_calls": [call()]},
                {"role": "user", "content": "?"},
                {"role": "assistant", "content": "r"},
            ],
            "unanswered_tool_call",
            "messages[2]",
        ),
    ],
)
def test_tool_messages_must_answer_calls(messages, code, where):
    error = error_of({"messages": messages})
    assert error.code == code and where in str(error)


# -- wrong value types: each names the field path ---------------------------------------------

GOOD = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "r"}]


@pytest.mark.parametrize(
    "record, code, path",
    [
        ({"messages": "hi"}, "invalid_messages", "messages must be a list"),
        ({"messages": []}, "invalid_messages", "messages is empty"),
        ({"messages": [GOOD[0], "r"]}, "invalid_messages", "messages[1] must be an object, got a string"),
        ({"messages": [GOOD[0], {"content": "r"}]}, "missing_role", "messages[1] has no 'role'"),
        ({"messages": [GOOD[0], {"role": "bot", "content": "r"}]}, "unknown_role", "messages[1].role: unknown role 'bot'"),
        ({"messages": [GOOD[0], {"role": 3, "content": "r"}]}, "unknown_role", "messages[1].role: unknown role 3"),
        (
            {"messages": [GOOD[0], {"role": "assistant", "content": 42}]},
            "invalid_content",
            "messages[1].content must be a string, got a number",
        ),
        (
            {"messages": [GOOD[0], {"role": "assistant", "content": {"t": 1}}]},
            "invalid_content",
            "messages[1].content must be a string, got an object",
        ),
        ({"messages": [GOOD[0], {"role": "assistant"}]}, "missing_content", "messages[1] has no 'content'"),
        ({"messages": [{"role": "user", "content": None}, GOOD[1]]}, "missing_content", "messages[0].content is null"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}, GOOD[1]]},
            "invalid_content",
            "messages[0].content[0] is a 'image_url' part",
        ),
        (
            {"messages": [GOOD[0], {"role": "assistant", "content": "r", "weight": 2}]},
            "invalid_weight",
            "messages[1].weight must be 0 or 1, got 2",
        ),
        (
            {"messages": [GOOD[0], {"role": "assistant", "content": "r", "weight": True}]},
            "invalid_weight",
            "messages[1].weight must be 0 or 1, got True",
        ),
        (
            {"messages": [{"role": "user", "content": "q", "weight": 1}, GOOD[1]]},
            "invalid_weight",
            "messages[0].weight is allowed on assistant messages only",
        ),
        ({"messages": GOOD, "tools": {"type": "function"}}, "invalid_tools", "tools must be a list of tools, got an object"),
        ({"messages": GOOD, "tools": ["get_weather"]}, "invalid_tools", "tools[0] must be an object"),
        (
            {"messages": GOOD, "tools": [{"type": "function", "function": {"description": "x"}}]},
            "invalid_tools",
            "tools[0].function.name",
        ),
        ({"messages": GOOD, "tools": [{"type": "retrieval"}]}, "invalid_tools", "tools[0].type must be 'function'"),
        (
            {"messages": GOOD, "tools": [{"type": "function", "function": {"name": "f", "parameters": "{}"}}]},
            "invalid_tools",
            "tools[0].function.parameters",
        ),
        ({"messages": GOOD, "parallel_tool_calls": "yes"}, "invalid_value", "parallel_tool_calls"),
        (
            {"messages": [GOOD[0], {"role": "assistant", "content": "", "tool_calls": call()}]},
            "invalid_tool_calls",
            "messages[1].tool_calls must be a list",
        ),
        (
            {"messages": [GOOD[0], {"role": "assistant", "content": "", "tool_calls": [call(arguments="{city: Paris")]}]},
            "invalid_tool_calls",
            "messages[1].tool_calls[0].function.arguments is not valid JSON",
        ),
        (
            {"messages": [GOOD[0], {"role": "assistant", "content": "", "tool_calls": [call(name="")]}]},
            "invalid_tool_calls",
            "messages[1].tool_calls[0].function.name",
        ),
        (
            {"messages": [GOOD[0], {"role": "assistant", "content": "", "tool_calls": [{**call(), "type": "code"}]}]},
            "invalid_tool_calls",
            "messages[1].tool_calls[0].type",
        ),
        (
            {"messages": [{"role": "user", "content": "q", "tool_calls": [call()]}, GOOD[1]]},
            "invalid_tool_calls",
            "only assistant messages call tools",
        ),
        (
            {"messages": [GOOD[0], {"role": "assistant", "content": "", "tool_calls": []}]},
            "empty_assistant_message",
            "every trained assistant message is empty",
        ),
    ],
)
def test_wrong_value_types_name_the_field(record, code, path):
    error = error_of(record)
    assert error.code == code
    assert path in str(error)


def test_huge_values_are_not_echoed():
    error = error_of({"messages": [GOOD[0], {"role": "x" * 1_000_000, "content": "r"}]})
    assert len(str(error)) < 300


def test_unknown_top_level_keys_are_warnings(write_jsonl):
    example, warnings = norm({"messages": GOOD, "metadata": {"k": 1}, "id": "row-1"})
    assert example.messages == tuple(GOOD)
    assert [(w.code, "'metadata'" in w.message) for w in warnings] == [("unknown_key", True)]  # "id" is ignored quietly


def test_tool_calls_survive_a_json_round_trip(write_jsonl):
    record = {
        "messages": [
            GOOD[0],
            {"role": "assistant", "content": "", "tool_calls": [call()]},
            {"role": "tool", "tool_call_id": "call_abc", "content": "{}"},
            GOOD[1],
        ],
        "tools": [WEATHER_TOOL],
    }
    (example,) = load_examples(write_jsonl([record]))
    again, _ = norm({"messages": [dict(m) for m in json.loads(json.dumps(example.messages))], "tools": list(example.tools)})
    assert again.messages == example.messages and again.tools == example.tools
