"""preview_examples through SmolLM2's tokenizer and chat template (the tiny test model shares them):
the segments are the rendered text, and exactly the trained tokens of training are marked trained."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from tuneserve.data import preview as preview_module
from tuneserve.data.preview import preview_examples, preview_record, render_preview
from tuneserve.data.records import Example, PreferenceExample, TextExample
from tuneserve.models import TINY_RANDOM
from tuneserve.data.formatting import format_example


def trained(preview) -> list[str]:
    return [s["text"] for s in preview["segments"] if s["trained"]]


def full_text(preview) -> str:
    return "".join(s["text"] for s in preview["segments"])


def test_segments_are_the_rendered_text_with_only_answers_trained(write_jsonl, tokenizer):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello!"},
    ]
    path = write_jsonl([{"messages": messages}])
    [preview] = preview_examples(path, TINY_RANDOM)
    assert full_text(preview) == tokenizer.apply_chat_template(messages, tokenize=False)
    assert full_text(preview).startswith("<|im_start|>system\nBe brief.<|im_end|>")  # special tokens visible
    assert trained(preview) == ["Hello!<|im_end|>"]
    assert [s["trained"] for s in preview["segments"]] == [False, True, False]  # no two neighbours alike
    formatted = format_example(tokenizer, messages, 1024)  # what training computes
    assert (preview["line"], preview["n_tokens"], preview["n_trained"], preview["truncated"]) == (
        1,
        len(formatted.input_ids),
        formatted.n_trained,
        False,
    )
    assert preview["n_trained"] == len(tokenizer("Hello!<|im_end|>", add_special_tokens=False)["input_ids"])


def test_weight_zero_turns_are_context(write_jsonl, tokenizer):
    messages = [
        {"role": "user", "content": "One"},
        {"role": "assistant", "content": "First answer", "weight": 0},
        {"role": "user", "content": "Two"},
        {"role": "assistant", "content": "Second answer", "weight": 1},
        {"role": "user", "content": "Three"},
        {"role": "assistant", "content": "Third answer"},
    ]
    [preview] = preview_examples(write_jsonl([{"messages": messages}]), TINY_RANDOM)
    assert trained(preview) == ["Second answer<|im_end|>", "Third answer<|im_end|>"]
    assert "First answer<|im_end|>" in [s["text"] for s in preview["segments"] if not s["trained"]][0]
    clean = [{k: v for k, v in m.items() if k != "weight"} for m in messages]
    assert full_text(preview) == tokenizer.apply_chat_template(clean, tokenize=False)


def test_truncation_is_flagged_and_segments_cover_what_is_kept(write_jsonl, tokenizer):
    messages = [{"role": "user", "content": "Tell me " * 30}, {"role": "assistant", "content": "A long answer " * 20}]
    path = write_jsonl([{"messages": messages}])
    [whole] = preview_examples(path, TINY_RANDOM, max_seq_length=4096)
    limit = whole["n_tokens"] - 10  # cuts into the answer
    [cut] = preview_examples(path, TINY_RANDOM, max_seq_length=limit)
    assert not whole["truncated"] and whole["n_tokens"] == whole["n_tokens_full"]
    assert cut["truncated"] and cut["n_tokens"] == limit and cut["n_tokens_full"] == whole["n_tokens"]
    assert full_text(whole).startswith(full_text(cut)) and full_text(cut) != full_text(whole)
    assert cut["n_trained"] == whole["n_trained"] - 9  # the answer lost 9 tokens; the tenth was the trailing "\n"
    assert cut["segments"][-1]["trained"] and not cut["segments"][-1]["text"].endswith("<|im_end|>")
    [early] = preview_examples(path, TINY_RANDOM, max_seq_length=20)  # cut inside the prompt: nothing trained
    assert early["truncated"] and early["n_trained"] == 0 and [s["trained"] for s in early["segments"]] == [False]
    [exact] = preview_examples(path, TINY_RANDOM, max_seq_length=whole["n_tokens"])  # fits exactly: not cut
    assert not exact["truncated"]


def test_the_first_n_examples_with_their_lines(write_jsonl):
    records = [{"prompt": f"Question {i}?", "completion": f"Answer {i}."} for i in range(5)]
    path = write_jsonl(records[:2] + [None] + records[2:])  # the file's line 3 is blank-ish: "null" is never reached
    path.write_text(path.read_text().replace("null\n", "\n"))
    previews = preview_examples(path, TINY_RANDOM, n=3)
    assert [p["line"] for p in previews] == [1, 2, 4]
    assert [trained(p) for p in previews] == [["Answer 0.<|im_end|>"], ["Answer 1.<|im_end|>"], ["Answer 2.<|im_end|>"]]
    assert len(preview_examples(path, TINY_RANDOM, n=20)) == 5


def test_alpaca_demo_preview(alpaca_demo):
    [first] = preview_examples(alpaca_demo, TINY_RANDOM, n=1, max_seq_length=4096)
    assert "Describe a process of making crepes.<|im_end|>" in full_text(first)
    assert trained(first)[0].startswith("Making crepes is an easy") and trained(first)[0].endswith("<|im_end|>")


def test_raw_text_is_all_trained_and_a_preference_shows_the_chosen_answer(tokenizer):
    text = preview_record(tokenizer, TextExample(text="<|im_start|>user\nHi<|im_end|>", line=7), 1024)
    assert text["segments"] == [{"text": "<|im_start|>user\nHi<|im_end|>", "trained": True}]
    assert text["n_trained"] == text["n_tokens"] and text["line"] == 7

    pair = PreferenceExample(
        prompt=({"role": "user", "content": "Hi?"},),
        chosen={"role": "assistant", "content": "Hello!"},
        rejected={"role": "assistant", "content": "Go away."},
        line=2,
    )
    preview = preview_record(tokenizer, pair, 1024)
    assert trained(preview) == ["Hello!<|im_end|>"] and "Go away" not in full_text(preview)


def test_records_come_from_the_format_reader(monkeypatch, tmp_path, tokenizer):
    """Whatever formats.py yields (here: raw text) is previewed; the reader is asked for no more than n."""
    pulled = []

    def fake(_path):
        for i in range(100):
            pulled.append(i)
            yield TextExample(text=f"text {i}", line=i + 1)

    monkeypatch.setattr(preview_module, "iter_examples", fake)
    previews = preview_examples(tmp_path / "any.jsonl", TINY_RANDOM, n=2)
    assert [p["segments"] for p in previews] == [[{"text": "text 0", "trained": True}], [{"text": "text 1", "trained": True}]]
    assert len(pulled) == 2


def test_bad_arguments_and_bad_data(write_jsonl):
    from tuneserve.data import DataError

    path = write_jsonl([{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}, {"bad": 1}])
    with pytest.raises(ValueError):
        preview_examples(path, TINY_RANDOM, n=0)
    assert len(preview_examples(path, TINY_RANDOM, n=1)) == 1  # the bad line 2 is never read
    with pytest.raises(DataError) as info:
        preview_examples(path, TINY_RANDOM, n=2)
    assert info.value.line == 2


def test_render_preview_highlights_trained_text(tokenizer):
    example = Example(messages=({"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there"}), line=3)
    previews = [preview_record(tokenizer, example, 1024), preview_record(tokenizer, example, 10)]
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, color_system="standard", width=120)
    render_preview(previews, console)
    out = buffer.getvalue()
    assert "Hello there<|im_end|>" in out and "<|im_start|>user" in out
    assert "\x1b[1;32mHello there<|im_end|>" in out  # trained: bold green
    assert "\x1b[2m<|im_start|>" in out  # context: dim
    plain = Console(file=io.StringIO(), width=120, record=True)
    render_preview(previews, plain)
    text = plain.export_text()
    assert f"line 3 · {previews[0]['n_tokens']} tokens · {previews[0]['n_trained']} trained" in text
    assert f"TRUNCATED from {previews[0]['n_tokens']}" in text


def test_sample_preference_and_tool_files(sample):
    """dpo_en_demo: the prompt and the chosen answer, only the chosen trained; glaive: tool outputs never trained."""
    source = json.loads(sample("dpo_en_demo.json").read_text(encoding="utf-8"))[0]
    [pair] = preview_examples(sample("dpo_en_demo.json"), TINY_RANDOM, n=1, max_seq_length=8192)
    assert trained(pair) == [source["chosen"]["value"] + "<|im_end|>"]
    assert source["rejected"]["value"] not in full_text(pair)

    [tools] = preview_examples(sample("glaive_toolcall_en_demo.json"), TINY_RANDOM, n=1, max_seq_length=8192)
    source = json.loads(sample("glaive_toolcall_en_demo.json").read_text(encoding="utf-8"))[0]["conversations"]
    answers = sum(1 for turn in source if turn["from"] in ("gpt", "function_call"))
    assert len(trained(tools)) == answers and all(t.endswith("<|im_end|>") for t in trained(tools))
    assert not any("<|im_start|>tool" in t for t in trained(tools))
    assert any("<|im_start|>tool" in s["text"] for s in tools["segments"] if not s["trained"])
