"""token_report on hand-made records and the sample files with the tiny test model (SmolLM2's
tokenizer): counts, percentiles, truncation, text and preference records, and trained tokens
equal to the mask the training recipes compute."""

from __future__ import annotations

import copy
import json
from types import SimpleNamespace

import numpy as np
import pytest

from tuneserve.data import load_examples, tokens
from tuneserve.data.formatting import format_example
from tuneserve.data.records import DataError, Example, PreferenceExample, TextExample
from tuneserve.data.tokens import token_report
from tuneserve.models import TINY_RANDOM, load_tokenizer, throughput

MODEL = TINY_RANDOM


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(MODEL)


@pytest.fixture(autouse=True)
def isolated_throughput(tmp_path, monkeypatch):
    """Throughput measurements go to a temporary store (the model cache itself stays shared)."""
    monkeypatch.setattr(throughput, "cache_dir", lambda: tmp_path)
    monkeypatch.setattr(tokens, "_device", lambda: "cpu")


def chat(user: str, answer: str, line: int = 1, **extra) -> Example:
    return Example(messages=({"role": "user", "content": user}, {"role": "assistant", "content": answer, **extra}), line=line)


def n_chat(tok, messages) -> int:
    clean = [{k: v for k, v in m.items() if k != "weight"} for m in messages]
    return len(tok.apply_chat_template(clean, tokenize=True, return_dict=False))


def n_text(tok, text: str) -> int:
    return len(tok(text, add_special_tokens=False)["input_ids"])


RECORDS = [
    chat("What is 2+2?", "4"),
    chat("Name three colours.", "Red, green and blue.", line=2),
    chat(
        "Write a haiku about the sea.", "Waves fold into foam,\nsalt wind carries gull voices,\nthe tide keeps its time.", line=3
    ),
    chat("你好", "您好，我是 {{name}}，很高兴认识您。", line=4),
    Example(
        messages=(
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello! Context only.", "weight": 0},
            {"role": "user", "content": "Bye"},
            {"role": "assistant", "content": "Goodbye."},
        ),
        line=5,
    ),
]


def test_counts_equal_the_tokenizers_own(tok):
    report = token_report(RECORDS, MODEL, max_seq_length=1024, n_epochs=2)
    lengths = [n_chat(tok, r.messages) for r in RECORDS]
    assert report["examples"] == len(RECORDS)
    assert report["total_tokens"] == sum(lengths)
    assert report["min"] == min(lengths) and report["max"] == max(lengths)
    assert report["mean"] == round(sum(lengths) / len(lengths), 1)
    assert report["p50"] == round(float(np.percentile(lengths, 50)), 1)
    assert report["p95"] == round(float(np.percentile(lengths, 95)), 1)
    assert report["over_max_length"] == 0
    assert report["truncation"] == {"examples_truncated": 0, "tokens_cut": 0, "examples_losing_all_trained": 0}
    assert report["n_epochs"] == 2
    assert report["estimated_training_tokens"] == 2 * sum(lengths)
    assert report["model"] == MODEL and report["max_seq_length"] == 1024
    json.dumps(report)  # JSON-able


def test_trained_tokens_follow_the_training_mask(tok):
    """Content of each assistant turn with weight != 0 plus <|im_end|>; the weight-0 turn is context."""
    report = token_report(RECORDS, MODEL, max_seq_length=1024, n_epochs=1)
    exact = sum(format_example(tok, r.messages, 1024).n_trained for r in RECORDS)
    assert report["trained_tokens"] == exact
    by_hand = sum(n_text(tok, m["content"]) + 1 for r in RECORDS for m in r.trained_messages())
    assert report["trained_tokens"] == by_hand
    assert report["trained_share"] == round(exact / report["total_tokens"], 4)


def test_truncation_with_a_small_max_seq_length(tok):
    long_prompt = chat(
        "word " * 80, "Short answer."
    )  # its answer starts past 48 tokens (the default system prompt is ~30): dropped
    long_answer = chat("Hi", "and " * 60, line=2)  # cut, but keeps trained tokens
    fits = chat("Hi", "Hello.", line=3)
    records = [long_prompt, long_answer, fits]
    limit = 48
    report = token_report(records, MODEL, max_seq_length=limit, n_epochs=3)
    lengths = [n_chat(tok, r.messages) for r in records]
    assert lengths[0] > limit and lengths[1] > limit and lengths[2] <= limit
    exact = [format_example(tok, r.messages, limit) for r in records]
    assert [f.n_trained == 0 for f in exact] == [True, False, False]
    assert report["over_max_length"] == 2
    # only what training labels within the limit: the cut answer's head, nothing of the dropped example
    assert report["trained_tokens"] == sum(f.n_trained for f in exact)
    assert report["trained_tokens"] < sum(format_example(tok, r.messages, 1024).n_trained for r in records)
    assert report["truncation"] == {
        "examples_truncated": 2,
        "tokens_cut": lengths[0] - limit + lengths[1] - limit,
        "examples_losing_all_trained": 1,
    }
    # training processes the kept examples, cut to the limit, every epoch
    assert report["estimated_training_tokens"] == 3 * sum(len(f.input_ids) for f in exact if f.n_trained)


def test_text_records_train_every_token(tok):
    texts = ["Plain text to pretrain on.", "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n"]
    report = token_report([TextExample(t, line=i + 1) for i, t in enumerate(texts)], MODEL, max_seq_length=8, n_epochs=1)
    lengths = [n_text(tok, t) for t in texts]
    assert report["total_tokens"] == sum(lengths) and max(lengths) > 8
    assert report["trained_tokens"] == sum(min(n, 8) for n in lengths)  # every token training keeps
    assert report["trained_share"] == round(sum(min(n, 8) for n in lengths) / sum(lengths), 4)
    assert report["truncation"]["examples_losing_all_trained"] == 0
    assert report["estimated_training_tokens"] == sum(min(n, 8) for n in lengths)


def test_preference_records_report_the_chosen_side_and_the_rejected_lengths(tok):
    prompt = ({"role": "user", "content": "Is the sky blue?"},)
    chosen = {"role": "assistant", "content": "Yes, on a clear day, because of Rayleigh scattering."}
    rejected = {"role": "assistant", "content": "No."}
    record = PreferenceExample(prompt=prompt, chosen=chosen, rejected=rejected, line=1)
    report = token_report([record], MODEL, max_seq_length=1024, n_epochs=1)
    n_chosen, n_rejected = n_chat(tok, (*prompt, chosen)), n_chat(tok, (*prompt, rejected))
    assert report["total_tokens"] == n_chosen
    assert report["trained_tokens"] == n_text(tok, chosen["content"]) + 1
    assert report["rejected"] == {
        "examples": 1,
        "total_tokens": n_rejected,
        "mean": float(n_rejected),
        "max": n_rejected,
        "over_max_length": 0,
    }
    assert report["estimated_training_tokens"] == n_chosen + n_rejected  # DPO runs both sides


def test_n_epochs_none_uses_the_auto_heuristic():
    from tuneserve.training.spec import auto_n_epochs

    report = token_report(RECORDS, MODEL, max_seq_length=1024, n_epochs=None)
    assert report["n_epochs"] == auto_n_epochs(len(RECORDS))


def test_a_stream_counts_like_a_list():
    whole = token_report(RECORDS * 3, MODEL, max_seq_length=40, n_epochs=1)
    consumed = []

    def stream():
        for r in RECORDS * 3:
            consumed.append(r)
            yield r

    assert token_report(stream(), MODEL, max_seq_length=40, n_epochs=1) == whole
    assert len(consumed) == 15


def test_no_throughput_means_no_estimate():
    report = token_report(RECORDS, MODEL, max_seq_length=1024, n_epochs=1)
    assert report["throughput_tokens_per_s"] is None and report["estimated_time_s"] is None
    assert report["device"] == "cpu"


def test_estimated_time_from_recorded_throughput():
    throughput.record_throughput(MODEL, "cpu", 100.0)
    report = token_report(RECORDS, MODEL, max_seq_length=1024, n_epochs=2)
    assert report["throughput_tokens_per_s"] == 100.0
    assert report["estimated_time_s"] == round(report["estimated_training_tokens"] / 100.0, 1)
    throughput.record_throughput(MODEL, "cuda", 1e6)  # another device does not leak in
    assert token_report(RECORDS, MODEL, max_seq_length=1024, n_epochs=2)["throughput_tokens_per_s"] == 100.0


class _Events:
    """What the recipes' format functions write to: their drop warnings."""

    def __init__(self):
        self.messages: list[str] = []

    def message(self, text: str, level: str = "info") -> None:
        self.messages.append(text)


def _training_mask_sum(records, tokenizer, max_seq_length: int) -> int:
    """Trained tokens as the training recipes format the file: SFT's format_set, DPO's format_pairs (chosen side)."""
    from tuneserve.training.recipes import dpo, sft

    spec = SimpleNamespace(max_seq_length=max_seq_length, train_on_inputs=False)
    if isinstance(records[0], PreferenceExample):
        return sum(pair.chosen.n_trained for pair in dpo.format_pairs(records, tokenizer, spec, _Events(), "training"))
    return sum(f.n_trained for f in sft.format_set(records, tokenizer, spec, _Events(), "training"))


@pytest.mark.parametrize("name", ["alpaca_en_demo.json", "identity.json", "glaive_toolcall_en_demo.json", "dpo_en_demo.json"])
def test_trained_tokens_are_the_training_mask_on_the_sample_files(tok, sample_file, name):
    """The report counts exactly what training labels, truncation and dropped examples included (no approximation)."""
    records = load_examples(sample_file(name))
    limit = 256  # every sample file has examples longer than this, so the cut and the drops are exercised
    report = token_report(records, MODEL, max_seq_length=limit, n_epochs=1)
    assert report["examples"] == len(records) and report["truncation"]["examples_truncated"] > 0
    assert report["trained_tokens"] == _training_mask_sum(records, tok, limit)


def test_a_template_that_cannot_render_is_a_data_error_naming_the_line(tok, monkeypatch):
    broken = copy.deepcopy(tok)  # the loaded tokenizer is shared: never change it
    broken.chat_template = "{{ raise_exception('roles must alternate') }}"
    monkeypatch.setattr(tokens, "load_tokenizer", lambda model: broken)
    with pytest.raises(DataError) as caught:
        token_report([TextExample("fine", line=1), chat("Hi", "Yo", line=2)], MODEL, max_seq_length=64, n_epochs=1)
    assert caught.value.line == 2 and caught.value.code == "template_error" and "roles must alternate" in str(caught.value)


def test_tool_calls_count_as_training_renders_them(tok):
    """SmolLM2's template cannot write tool_calls: training inlines them into the content, and so do we."""
    tools = (
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather of a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        },
    )
    record = Example(
        messages=(
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 21}'},
            {"role": "assistant", "content": "It is 21 °C in Paris."},
        ),
        line=1,
        tools=tools,
    )
    report = token_report([record], MODEL, max_seq_length=1024, n_epochs=1)
    exact = format_example(tok, record.messages, 1024, tools=record.tools)
    assert report["total_tokens"] == len(exact.input_ids)
    assert report["trained_tokens"] == exact.n_trained
