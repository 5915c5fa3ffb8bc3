"""Parsing what LLMs write back: Q&A pairs (synthesis) and YES/NO verdicts (judges), on replies
recorded from SmolLM2 and on the malformed shapes models produce (fences, prose around the JSON,
missing or trailing commas, cut-off arrays, single quotes, one object instead of a list)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuneserve.llm.replies import QAPair, parse_qa_pairs, parse_verdict

RECORDED = json.loads((Path(__file__).parent / "recorded_replies.json").read_text(encoding="utf-8"))


def questions(text: str) -> list[str]:
    return [p.question for p in parse_qa_pairs(text).pairs]


def test_fenced_json_with_prose_around_it():
    reply = 'Sure! Here are the pairs:\n```json\n[{"question": "Who wrote it?", "answer": "Ada.", "context": "Ada wrote it."}]\n```\nHope this helps!'
    result = parse_qa_pairs(reply)
    assert result.pairs == [QAPair("Who wrote it?", "Ada.", "Ada wrote it.")]
    assert result.candidates == 1 and result.problems == {}


def test_the_seed_template_shape_with_its_missing_comma_and_a_trailing_comma():
    # llama-recipes' own template has no comma after "Answer"; models copy it (and add a trailing one).
    reply = (
        '[\n  {\n    "Question": "What does anarchism reject?",\n    "Answer": "Involuntary, coercive hierarchy."\n'
        '    "Context": "It rejects all involuntary, coercive forms of hierarchy."\n  },\n'
        '  {\n    "Question": "What does it call for?",\n    "Answer": "Abolishing the state."\n'
        '    "Context": "Anarchism calls for the abolition of the state."\n  },\n]'
    )
    with pytest.raises(json.JSONDecodeError):
        json.loads(reply)
    result = parse_qa_pairs(reply)
    assert [p.question for p in result.pairs] == ["What does anarchism reject?", "What does it call for?"]
    assert result.pairs[1].context == "Anarchism calls for the abolition of the state."


def test_an_array_cut_off_by_max_tokens_keeps_the_complete_objects():
    reply = '[{"question": "A?", "answer": "1"}, {"question": "B?", "answer": "2"}, {"question": "C?", "ans'
    result = parse_qa_pairs(reply)
    assert questions(reply) == ["A?", "B?"]
    assert result.problems == {}


@pytest.mark.parametrize(
    "reply, expected",
    [
        ('{"question": "One?", "answer": "Only one."}', ["One?"]),  # an object, not a list
        ('{"qa_pairs": [{"q": "Short keys?", "a": "Yes."}]}', ["Short keys?"]),  # a list under a key
        ('{"question": "THE DOCUMENT TEXT", "answer": [{"question": "Nested?", "answer": "Yes."}]}', ["Nested?"]),  # a wrapper
        ("[{'question': 'Python quotes?', 'answer': 'Yes.'}]", ["Python quotes?"]),  # single quotes
        ('{"question": "A?", "answer": "1"}\n{"question": "B?", "answer": "2"}', ["A?", "B?"]),  # JSON lines
        (
            "1. **Question:** What is albedo?\n**Answer:** A measure of reflection.\n"
            "2. Question: What is 0?\nAnswer: A black body.",
            ["What is albedo?", "What is 0?"],
        ),  # labeled text
    ],
)
def test_shapes_other_than_a_clean_array(reply, expected):
    assert questions(reply) == expected


def test_missing_and_empty_fields_are_counted_not_kept():
    reply = json.dumps(
        [
            {"question": "", "answer": "orphan"},
            {"question": "No answer?"},
            {"answer": "x"},
            {"question": "Numbers?", "answer": 42},
            {"question": "Fine?", "answer": "Yes.", "extra": 1},
        ]
    )
    result = parse_qa_pairs(reply)
    assert [(p.question, p.answer) for p in result.pairs] == [("Numbers?", "42"), ("Fine?", "Yes.")]
    assert result.candidates == 5
    assert result.problems == {"missing_question": 2, "missing_answer": 1}


@pytest.mark.parametrize(
    "reply", ["", "I cannot help with that.", "```\nnot json at all\n```", "{num_questions}", '["just", "strings"]']
)
def test_a_reply_with_nothing_usable_counts_once(reply):
    result = parse_qa_pairs(reply)
    assert result.pairs == [] and result.candidates == 0
    assert result.problems == {"unparseable_reply": 1}


@pytest.mark.parametrize("case", RECORDED["generation"], ids=lambda c: c["note"][:40])
def test_recorded_smollm2_generation_replies(case):
    result = parse_qa_pairs(case["reply"])
    assert len(result.pairs) == case["pairs"]
    assert result.problems == case["problems"]


# --- verdicts ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply, verdict, reason",
    [
        ('{"Reason": "It matches.", "Result": "YES"}', "YES", "It matches."),
        ('{"reason": "Wrong city.", "result": "no"}', "NO", "Wrong city."),
        ('{"REASON": "ok", "RESULT": "Yes."}', "YES", "ok"),
        ('```json\n{"verdict": "No", "explanation": "Off topic."}\n```\nLet me know if you need more.', "NO", "Off topic."),
        ('[{"Result": "YES", "Reason": "Same fact."}]', "YES", "Same fact."),
        ("**YES** - the answer names Paris.", "YES", "the answer names Paris."),
        ("no. The student says green.", "NO", "The student says green."),
        ("Verdict: Yes\nThe answers agree.", "YES", "The answers agree."),
        ("The student restates the reference. Result: NO", "NO", None),
        ('{"Result": true, "Reason": "fine"}', None, None),  # a JSON boolean is not a YES/NO string
    ],
)
def test_verdicts(reply, verdict, reason):
    got, why = parse_verdict(reply)
    assert got == verdict
    if reason is not None:
        assert why == reason


@pytest.mark.parametrize(
    "reply",
    [
        '{"Reason": "your reason here.", "Result": "YES or No."}',  # the template, echoed
        "YES or NO",
        "Yes and no: partly right.",
        "The answer is correct.",  # no verdict word: never guessed
        "",
    ],
)
def test_unreadable_verdicts_are_none_with_the_text_as_reason(reply):
    verdict, reason = parse_verdict(reply)
    assert verdict is None
    assert reason == reply.strip()


@pytest.mark.parametrize("case", RECORDED["judge"], ids=lambda c: c["reply"][:30])
def test_recorded_smollm2_judge_replies(case):
    assert parse_verdict(case["reply"])[0] == case["verdict"]
