"""Evaluation datasets: {question, answer} items (JSON or JSONL, any key casing) and chat-format
files whose last assistant turn is the reference; bad items are errors naming the line."""

from __future__ import annotations

import pytest

from tuneserve.data.records import DataError
from tuneserve.evaluation.dataset import load_eval_items


def test_question_answer_jsonl_and_the_seeds_capitalized_json(write_jsonl, write_json):
    items = load_eval_items(
        write_jsonl([{"question": "Capital of France?", "answer": "Paris."}, {"question": "2+2?", "answer": "4", "id": 7}])
    )
    assert [(i.index, i.line, i.question, i.reference) for i in items] == [
        (0, 1, "Capital of France?", "Paris."),
        (1, 2, "2+2?", "4"),
    ]
    assert items[0].messages == ({"role": "user", "content": "Capital of France?"},)
    seed = load_eval_items(write_json([{"Question": "What is Llama?", "Answer": "A model family."}]))
    assert seed[0].question == "What is Llama?" and seed[0].reference == "A model family."


def test_chat_format_uses_the_last_assistant_turn_as_the_reference(write_jsonl):
    record = {
        "messages": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!", "weight": 0},
            {"role": "user", "content": "Capital of Marnak?"},
            {"role": "assistant", "content": "Velspire."},
        ]
    }
    item = load_eval_items(write_jsonl([record]))[0]
    assert item.reference == "Velspire." and item.question == "Capital of Marnak?"
    assert [m["role"] for m in item.messages] == ["system", "user", "assistant", "user"]
    assert all("weight" not in m for m in item.messages)  # a training mark, not for the chat API


def test_other_training_formats_work_too(write_jsonl):
    items = load_eval_items(
        write_jsonl([{"instruction": "Translate", "input": "chat", "output": "cat"}, {"prompt": "Say hi", "completion": "hi"}])
    )
    assert [i.reference for i in items] == ["cat", "hi"]
    assert items[0].question.startswith("Translate")


@pytest.mark.parametrize(
    "record, message",
    [
        ({"question": "No answer?", "answer": ""}, "'answer' must be a non-empty string"),
        ({"question": 3, "answer": "x"}, "'question' must be a non-empty string"),
        ({"Question": "Only a question?"}, "'answer' is missing"),
        ({"text": "raw text"}, "no single reference answer"),
        ({"prompt": "p", "chosen": "a", "rejected": "b"}, "no single reference answer"),
        ({"foo": 1}, "unknown record format"),
        ({"messages": [{"role": "user", "content": "unanswered"}]}, "no assistant message"),
    ],
)
def test_bad_items_name_their_line(write_jsonl, record, message):
    path = write_jsonl([{"question": "fine?", "answer": "yes"}, record])
    with pytest.raises(DataError, match=message) as info:
        load_eval_items(path)
    assert info.value.line == 2


def test_empty_and_broken_files(write_bytes):
    with pytest.raises(DataError, match="empty"):
        load_eval_items(write_bytes(b"\n\n"))
    with pytest.raises(DataError, match="invalid JSON") as info:
        load_eval_items(write_bytes(b'{"question": "a", "answer": "b"}\n{"question": \n'))
    assert info.value.line == 2


def test_max_items(write_jsonl):
    path = write_jsonl([{"question": f"q{i}", "answer": f"a{i}"} for i in range(10)] + [{"broken": True}])
    assert [i.question for i in load_eval_items(path, max_items=3)] == ["q0", "q1", "q2"]
