"""The inference engine on the tiny random model (and SmolLM2 for one sensible answer)."""

from __future__ import annotations

import threading

import pytest

from tests.conftest import wait_for

from tuneserve.inference.engine import ContextLengthExceeded, Delta, Engine, Generation, SamplingParams
from tuneserve.models import BUILTIN_SMOLLM2, resolve_model

MESSAGES = [{"role": "user", "content": "Tell me a story about a cat."}]
GREEDY = SamplingParams(temperature=0, max_tokens=24)


def _collect(stream):
    items = list(stream)
    assert all(isinstance(item, Delta) and item.text for item in items[:-1])
    assert isinstance(items[-1], Generation)
    return [item.text for item in items[:-1]], items[-1]


def test_greedy_is_deterministic_and_streaming_matches(inference_engine, tiny):
    first = inference_engine.chat(tiny, None, MESSAGES, GREEDY)
    second = inference_engine.chat(tiny, None, MESSAGES, GREEDY)
    assert first == second
    assert first.text and first.finish_reason == "length" and first.completion_tokens == 24

    deltas, final = _collect(inference_engine.stream_chat(tiny, None, MESSAGES, GREEDY))
    assert "".join(deltas) == first.text
    assert final == first


def test_usage_and_text_match_a_plain_transformers_generate(inference_engine, tiny, tokenizer):
    import torch
    from transformers import AutoModelForCausalLM

    result = inference_engine.chat(tiny, None, MESSAGES, SamplingParams(temperature=0, max_tokens=12))

    prompt = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    assert result.prompt_tokens == ids.shape[1]
    model = AutoModelForCausalLM.from_pretrained(resolve_model(tiny), dtype=torch.float32).eval()
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False)
    completion = out[0, ids.shape[1] :]
    assert result.completion_tokens == len(completion) == 12
    assert result.text == tokenizer.decode(completion, skip_special_tokens=True)


def test_complete_tokenizes_the_raw_prompt(inference_engine, tiny, tokenizer):
    prompt = "Once upon a time"
    result = inference_engine.complete(tiny, None, prompt, SamplingParams(temperature=0, max_tokens=5))
    assert result.prompt_tokens == len(tokenizer(prompt)["input_ids"])
    assert result.completion_tokens == 5 and result.finish_reason == "length"
    chat = inference_engine.chat(tiny, None, [{"role": "user", "content": prompt}], SamplingParams(temperature=0, max_tokens=5))
    assert chat.prompt_tokens > result.prompt_tokens  # the chat template wraps the same words


def test_seed_makes_sampling_reproducible(inference_engine, tiny):
    params = SamplingParams(temperature=1.0, max_tokens=16, seed=7)
    first = inference_engine.chat(tiny, None, MESSAGES, params)
    inference_engine.chat(tiny, None, MESSAGES, SamplingParams(temperature=1.0, max_tokens=16))  # unseeded in between
    assert inference_engine.chat(tiny, None, MESSAGES, params) == first
    other = inference_engine.chat(tiny, None, MESSAGES, SamplingParams(temperature=1.0, max_tokens=16, seed=8))
    assert other.text != first.text
    deltas, final = _collect(inference_engine.stream_chat(tiny, None, MESSAGES, params))
    assert "".join(deltas) == first.text and final == first


def test_stop_string_cuts_text_in_both_modes(inference_engine, tiny):
    sampled = SamplingParams(temperature=1.0, max_tokens=40, seed=3)
    full = inference_engine.chat(tiny, None, MESSAGES, sampled)
    assert len(full.text) > 20
    stop = full.text[12:16]  # four characters from the middle, most likely across a token boundary
    cut = full.text[: full.text.index(stop)]

    params = SamplingParams(temperature=1.0, max_tokens=40, seed=3, stop=("never appears", stop))
    result = inference_engine.chat(tiny, None, MESSAGES, params)
    assert result.text == cut
    assert result.finish_reason == "stop"
    assert 0 < result.completion_tokens < full.completion_tokens  # generation ended at the stop string

    deltas, final = _collect(inference_engine.stream_chat(tiny, None, MESSAGES, params))
    assert "".join(deltas) == cut and final == result


def test_context_length_is_checked_before_streaming_starts(inference_engine, tiny):
    with pytest.raises(ContextLengthExceeded):
        inference_engine.stream_chat(tiny, None, MESSAGES, SamplingParams(max_tokens=10_000))
    with pytest.raises(ContextLengthExceeded):
        inference_engine.complete(tiny, None, "word " * 3000, SamplingParams())


def test_closing_a_stream_stops_its_row(inference_engine, tiny):
    stream = inference_engine.stream_complete(tiny, None, "Once upon a time", SamplingParams(temperature=0, max_tokens=2000))
    assert isinstance(next(stream), Delta)
    assert inference_engine._batcher.active_rows() == 1
    stream.close()
    # Running to max_tokens takes several seconds even on the tiny model; a cancelled row ends
    # at the next step.
    wait_for(lambda: inference_engine._batcher.active_rows() == 0, 1.5, "the batch to free its rows", interval_s=0.01)
    # The engine is healthy: the next request runs.
    assert inference_engine.chat(tiny, None, MESSAGES, SamplingParams(temperature=0, max_tokens=2)).completion_tokens == 2


def test_concurrent_requests_get_their_own_results(inference_engine, tiny):
    prompts = [f"Story number {i}:" for i in range(4)]
    expected = [inference_engine.complete(tiny, None, p, GREEDY) for p in prompts]
    results: dict[int, Generation] = {}

    def call(i):
        results[i] = inference_engine.complete(tiny, None, prompts[i], GREEDY)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [results[i] for i in range(4)] == expected


def test_adapter_changes_output_and_base_stays_the_base(inference_engine, tiny, adapter_a):
    base = inference_engine.chat(tiny, None, MESSAGES, GREEDY)
    tuned = inference_engine.chat(tiny, adapter_a, MESSAGES, GREEDY)
    assert tuned.text != base.text
    assert inference_engine.chat(tiny, None, MESSAGES, GREEDY) == base  # the adapter is disabled for the base
    assert inference_engine.chat(tiny, adapter_a, MESSAGES, GREEDY) == tuned
    assert str(adapter_a.resolve()) in inference_engine.loaded()["adapters"]


def test_least_recently_used_adapter_is_evicted(tiny, adapter_a, adapter_b):
    inference_engine = Engine(max_adapters=1)
    try:
        a = inference_engine.chat(tiny, adapter_a, MESSAGES, GREEDY)
        b = inference_engine.chat(tiny, adapter_b, MESSAGES, GREEDY)
        assert a.text != b.text
        loaded = inference_engine.loaded()
        assert loaded["adapters"] == [str(adapter_b.resolve())]
        assert loaded["base_models"] == [tiny]
        assert inference_engine.chat(tiny, adapter_a, MESSAGES, GREEDY) == a  # reloaded after eviction
        assert inference_engine.loaded()["adapters"] == [str(adapter_a.resolve())]
    finally:
        inference_engine.close()


def test_unknown_adapter_dir_is_refused(inference_engine, tiny, tmp_path):
    with pytest.raises(FileNotFoundError):
        inference_engine.chat(tiny, tmp_path, MESSAGES, GREEDY)


def test_smollm2_answers_two_plus_two(inference_engine):
    messages = [{"role": "user", "content": "What is 2+2?"}]
    params = SamplingParams(temperature=0, max_tokens=40)
    first = inference_engine.chat(BUILTIN_SMOLLM2, None, messages, params)
    assert "4" in first.text
    assert first.finish_reason == "stop"  # it ends with <|im_end|>, which is not in the text
    assert "<|im_end|>" not in first.text
    assert inference_engine.chat(BUILTIN_SMOLLM2, None, messages, params) == first
    deltas, final = _collect(inference_engine.stream_chat(BUILTIN_SMOLLM2, None, messages, params))
    assert "".join(deltas) == first.text and final == first


def test_the_adapter_dirs_chat_template_is_used(inference_engine, tiny, adapter_a, tmp_path):
    import shutil

    adapter = shutil.copytree(adapter_a, tmp_path / "templated")
    (adapter / "chat_template.jinja").write_text(
        "{% for m in messages %}<<{{ m['role'] }}>> {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<<assistant>> Always answer in rhyme.\n{% endif %}"
    )
    plain = inference_engine.chat(tiny, adapter_a, MESSAGES, SamplingParams(temperature=0, max_tokens=2))
    templated = inference_engine.chat(tiny, adapter, MESSAGES, SamplingParams(temperature=0, max_tokens=2))
    assert templated.prompt_tokens != plain.prompt_tokens
