"""Parsing generated text back into OpenAI tool calls."""

import json

from tuneserve.api.tool_calls import parse_tool_calls


def test_one_call_no_content():
    content, calls = parse_tool_calls('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>')
    assert content is None and len(calls) == 1
    assert calls[0]["type"] == "function" and calls[0]["id"].startswith("call_")
    assert calls[0]["function"]["name"] == "get_weather"
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Paris"}


def test_text_around_and_two_calls():
    text = 'Let me check. <tool_call>{"name": "a", "arguments": "{\\"x\\": 1}"}</tool_call><tool_call>{"name": "b"}</tool_call> Done.'
    content, calls = parse_tool_calls(text)
    assert [c["function"]["name"] for c in calls] == ["a", "b"]
    assert calls[0]["function"]["arguments"] == '{"x": 1}' and calls[1]["function"]["arguments"] == "{}"
    assert content == "Let me check.  Done."


def test_broken_or_absent_blocks_leave_text_alone():
    for text in ("plain answer", "<tool_call>{not json}</tool_call>", '<tool_call>{"arguments": {}}</tool_call>'):
        content, calls = parse_tool_calls(text)
        assert calls == [] and content == text
