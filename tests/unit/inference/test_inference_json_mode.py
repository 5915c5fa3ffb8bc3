"""JSON mode: the incremental JSON-object prefix checker, and SmolLM2 answers that parse."""

from __future__ import annotations

import json

import pytest

from tuneserve.inference.json_mode import JsonPrefix, is_json_object_prefix
from tuneserve.models import BUILTIN_SMOLLM2

VALID = [
    "{}",
    ' { "a" : 1 } ',
    '{"a": [1, -2.5e+3, 0, 0.25, true, false, null, "x"], "b": {"c": {}}, "d": []}',
    '{"esc": "quote \\" slash \\\\ \\/ \\n \\u00e9 é 你好"}',
    '{"n": -0.0E-1}',
]


@pytest.mark.parametrize("text", VALID)
def test_every_prefix_of_a_valid_object_is_accepted_and_the_whole_is_complete(text):
    assert isinstance(json.loads(text), dict)
    stripped = text.rstrip()
    for end in range(len(stripped) + 1):
        assert is_json_object_prefix(stripped[:end]), stripped[:end]
    state = JsonPrefix().feed(stripped, max_whitespace=100)
    assert state.complete
    assert not JsonPrefix().feed(stripped[:-1], max_whitespace=100).complete


@pytest.mark.parametrize(
    "text",
    [
        "[1, 2]",
        '"a"',
        "1",
        "x",
        "{a: 1}",
        "{'a': 1}",
        '{"a" 1}',
        '{"a": 01}',
        '{"a": 1,}',
        '{"a": tru e}',
        '{"a": 1]',
        '{"a": [1}',
        '{"a": "\\x"}',
        '{"a": "\\u12g4"}',
        '{"a": "line\nbreak"}',
        '{"a": -}',
        '{"a": 1.}',
        '{"a": 1e}',
        "{} {}",
        "{}x",
        '{"a": .5}',
        '{"a": +1}',
        "{,}",
        '{"a":1 "b":2}',
    ],
)
def test_invalid_texts_are_refused_at_the_first_bad_character(text):
    assert not is_json_object_prefix(text)


def test_numbers_end_at_delimiters_and_states_are_reusable():
    state = JsonPrefix().feed('{"a": 12')
    assert state is not None and not state.complete
    assert state.feed("}").complete
    assert state.feed("3}").complete
    assert state.feed('.5, "b": 0}').complete
    assert state.feed("x") is None
    assert state.feed('{"a": 12') is None  # the state did not change: feeding returns new states


def test_endless_whitespace_is_refused():
    assert JsonPrefix().feed("{" + " " * 8) is not None
    assert JsonPrefix().feed("{" + " " * 9) is None
    assert JsonPrefix().feed('{"a": "' + " " * 50) is not None  # inside a string it is text


@pytest.mark.parametrize("prefix", ['{"a": [1, {"b": "x', '{"k', '{"a": tr', '{"a": -', '{"a": "\\u00', '{"a":', "{"])
def test_closing_completes_any_prefix(prefix):
    state = JsonPrefix().feed(prefix)
    assert state.feed(state.closing()).complete
    assert isinstance(json.loads(prefix + state.closing()), dict)


def test_smollm2_json_mode_answers_parse_as_objects(inference_engine):
    import threading

    from tuneserve.inference.engine import SamplingParams

    prompts = [
        "Give me a JSON object with the name and age of a fictional person.",
        "List three fruits as JSON.",
        "What is the capital of France? Answer in JSON.",
        "Hello!",
    ]
    params = [
        SamplingParams(temperature=0, max_tokens=48, json_mode=True),
        SamplingParams(temperature=0.8, max_tokens=48, json_mode=True, seed=5),
        SamplingParams(temperature=0, max_tokens=10, json_mode=True),
    ]  # closed within a tight budget
    jobs = [(prompt, p) for prompt in prompts for p in params]
    results: dict = {}

    def call(i):
        prompt, p = jobs[i]
        results[i] = inference_engine.chat(BUILTIN_SMOLLM2, None, [{"role": "user", "content": prompt}], p)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(jobs))]  # batched together
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for i, (_, p) in enumerate(jobs):
        result = results[i]
        assert result.finish_reason == "stop", result
        assert result.completion_tokens <= p.max_tokens
        assert isinstance(json.loads(result.text), dict), result.text
