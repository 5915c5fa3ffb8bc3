"""Dynamic batching: concurrent requests (base and adapters mixed) share decode steps and give the
same results as alone; per-row sampling, penalties, logprobs, cancellation, the adapter budget."""

from __future__ import annotations

import math
import threading

import pytest

from tests.conftest import wait_for

from tuneserve.inference.engine import Delta, Engine, Generation, SamplingParams

MESSAGES = [{"role": "user", "content": "Tell me a story about a cat."}]


def _concurrently(calls):
    """Run the calls in threads started together; their results in order (errors re-raised)."""
    results: list = [None] * len(calls)
    barrier = threading.Barrier(len(calls))

    def run(i):
        barrier.wait()
        try:
            results[i] = calls[i]()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results


@pytest.fixture(scope="module")
def batch_engine():
    # A long collection window, so requests started together surely share their first step.
    inference_engine = Engine(batch_window_s=0.3)
    yield inference_engine
    inference_engine.close()


def test_mixed_adapter_batch_gives_the_same_greedy_text_as_alone(batch_engine, tiny, adapter_a, adapter_b):
    greedy = SamplingParams(temperature=0, max_tokens=20)
    jobs = []
    for adapter in (None, adapter_a, adapter_b):
        for prompt in ("Once upon a time", "The capital of France is a city where many people", "Hi"):
            jobs.append((adapter, prompt))
    alone = [batch_engine.complete(tiny, a, p, greedy) for a, p in jobs]
    assert len({r.text for r in alone[::3]}) == 3  # the adapters really differ from the base
    steps = batch_engine._batcher.steps
    together = _concurrently([lambda a=a, p=p: batch_engine.complete(tiny, a, p, greedy) for a, p in jobs])
    assert together == alone
    assert batch_engine._batcher.max_rows_seen >= len(jobs)
    assert batch_engine._batcher.steps - steps <= 21  # one decode loop for all of them, not nine


def test_requests_joining_a_running_batch_get_their_own_results(inference_engine, tiny, adapter_a):
    greedy = SamplingParams(temperature=0, max_tokens=16)
    long = SamplingParams(temperature=0, max_tokens=400)
    prompts = [f"Story number {i}:" for i in range(4)]
    expected = [inference_engine.complete(tiny, adapter_a if i % 2 else None, p, greedy) for i, p in enumerate(prompts)]
    long_alone = inference_engine.complete(tiny, None, "A long one", long)
    stream = inference_engine.stream_complete(tiny, None, "A long one", long)
    first = next(stream)
    assert isinstance(first, Delta)
    # The long row is generating: these join it at its next steps.
    joined = [inference_engine.complete(tiny, adapter_a if i % 2 else None, p, greedy) for i, p in enumerate(prompts)]
    rest = list(stream)
    assert joined == expected
    assert first.text + "".join(d.text for d in rest[:-1]) == long_alone.text and rest[-1] == long_alone


def test_seeded_sampling_does_not_depend_on_the_batch(batch_engine, tiny, adapter_a):
    seeded = SamplingParams(temperature=1.0, max_tokens=16, seed=11)
    alone = batch_engine.chat(tiny, None, MESSAGES, seeded)
    others = [
        lambda i=i: batch_engine.chat(
            tiny, adapter_a if i % 2 else None, MESSAGES, SamplingParams(temperature=1.0, max_tokens=8 + i)
        )
        for i in range(5)
    ]
    results = _concurrently([lambda: batch_engine.chat(tiny, None, MESSAGES, seeded), *others])
    assert results[0] == alone
    other = batch_engine.chat(tiny, None, MESSAGES, SamplingParams(temperature=1.0, max_tokens=16, seed=12))
    assert other.text != alone.text


def test_frequency_and_presence_penalties_reduce_repeats(inference_engine, tiny, tokenizer):
    def distinct(params):
        result = inference_engine.complete(tiny, None, "Once upon a time", params)
        ids = tokenizer(result.text, add_special_tokens=False)["input_ids"]
        return len(set(ids)) / max(1, len(ids)), result

    plain, plain_result = distinct(SamplingParams(temperature=0, max_tokens=30))
    freq, freq_result = distinct(SamplingParams(temperature=0, max_tokens=30, frequency_penalty=2.0))
    pres, _ = distinct(SamplingParams(temperature=0, max_tokens=30, presence_penalty=2.0))
    assert plain < 0.5  # the tiny random model repeats itself a lot when greedy
    assert freq > plain and pres > plain
    # Negative penalties make repeats more likely: never fewer repeats than plain greedy.
    neg, _ = distinct(SamplingParams(temperature=0, max_tokens=30, frequency_penalty=-2.0))
    assert neg <= plain
    assert freq_result.text != plain_result.text


def test_logprobs_are_consistent(inference_engine, tiny):
    params = SamplingParams(temperature=0, max_tokens=12, logprobs=True, top_logprobs=5)
    result = inference_engine.chat(tiny, None, MESSAGES, params)
    assert result.logprobs is not None and len(result.logprobs) == result.completion_tokens  # no EOS on tiny
    assert "".join(entry.token for entry in result.logprobs) == result.text
    for entry in result.logprobs:
        assert entry.logprob <= 0 and bytes(entry.bytes).decode("utf-8", errors="replace") == entry.token
        assert len(entry.top_logprobs) == 5
        values = [alt.logprob for alt in entry.top_logprobs]
        assert values == sorted(values, reverse=True)
        assert entry.top_logprobs[0].token == entry.token  # greedy: the chosen token is the most likely
        assert math.isclose(entry.top_logprobs[0].logprob, entry.logprob, abs_tol=1e-6)
    # Streaming carries the same logprobs in its deltas.
    items = list(inference_engine.stream_chat(tiny, None, MESSAGES, params))
    assert items[-1] == result
    assert tuple(lp for d in items[:-1] for lp in d.logprobs) == result.logprobs
    # Not asked: none.
    assert inference_engine.chat(tiny, None, MESSAGES, SamplingParams(temperature=0, max_tokens=3)).logprobs is None
    # Sampled rows report the tempered distribution, and zero alternatives when top_logprobs=0.
    sampled = inference_engine.chat(tiny, None, MESSAGES, SamplingParams(temperature=0.7, max_tokens=6, seed=1, logprobs=True))
    assert all(e.logprob <= 0 and e.top_logprobs == () for e in sampled.logprobs)


def test_smollm2_logprobs_include_multibyte_bytes(inference_engine):
    from tuneserve.models import BUILTIN_SMOLLM2

    params = SamplingParams(temperature=0, max_tokens=40, logprobs=True, top_logprobs=2)
    result = inference_engine.chat(BUILTIN_SMOLLM2, None, [{"role": "user", "content": "Say 'café' and nothing else."}], params)
    assert b"".join(bytes(e.bytes) for e in result.logprobs) == result.text.encode("utf-8")


def test_cancelling_a_stream_frees_its_row_and_the_others_finish(inference_engine, tiny):
    long = SamplingParams(temperature=0, max_tokens=2000)
    short = SamplingParams(temperature=0, max_tokens=40)
    expected = inference_engine.complete(tiny, None, "Another story", short)
    doomed = inference_engine.stream_complete(tiny, None, "Once upon a time", long)
    assert isinstance(next(doomed), Delta)
    others = _concurrently([lambda: inference_engine.complete(tiny, None, "Another story", short)] * 3 + [lambda: doomed.close()])
    assert others[:3] == [expected] * 3
    wait_for(lambda: inference_engine._batcher.active_rows() == 0, 2, "the batch to free its rows", interval_s=0.01)


def test_dropping_an_unread_stream_cancels_it(inference_engine, tiny):
    stream = inference_engine.stream_complete(tiny, None, "Once upon a time", SamplingParams(temperature=0, max_tokens=2000))
    del stream
    wait_for(lambda: inference_engine._batcher.active_rows() == 0, 2, "the batch to free its rows", interval_s=0.01)
    assert inference_engine.chat(tiny, None, MESSAGES, SamplingParams(temperature=0, max_tokens=2)).completion_tokens == 2


def test_adapter_memory_budget_evicts_the_least_recently_used(tiny, adapter_a, adapter_b, tmp_path):
    import shutil

    adapter_c = shutil.copytree(adapter_a, tmp_path / "job-c" / "final")
    greedy = SamplingParams(temperature=0, max_tokens=4)
    probe = Engine()
    try:
        probe.chat(tiny, adapter_a, MESSAGES, greedy)
        size = probe.loaded()["adapter_bytes"]
    finally:
        probe.close()
    assert size > 0
    inference_engine = Engine(max_adapters=8, adapter_budget_bytes=int(2.5 * size))  # room for two
    try:
        a = inference_engine.chat(tiny, adapter_a, MESSAGES, greedy)
        inference_engine.chat(tiny, adapter_b, MESSAGES, greedy)
        inference_engine.chat(tiny, adapter_a, MESSAGES, greedy)  # a is now more recent than b
        c = inference_engine.chat(tiny, adapter_c, MESSAGES, greedy)
        loaded = inference_engine.loaded()
        assert loaded["adapters"] == [str(adapter_a.resolve()), str(adapter_c.resolve())]
        assert loaded["adapter_bytes"] == 2 * size
        assert c == a  # the same weights in another directory
        inference_engine.unload_adapter(adapter_a)
        inference_engine.unload_adapter(adapter_c)
        assert inference_engine.loaded()["adapters"] == [] and inference_engine.loaded()["adapter_bytes"] == 0
        base = inference_engine.chat(tiny, None, MESSAGES, greedy)
        assert inference_engine.chat(tiny, adapter_b, MESSAGES, greedy) != base  # reloaded after the base was unwrapped
    finally:
        inference_engine.close()


def test_sixteen_concurrent_requests(batch_engine, tiny, adapter_a):
    params = [SamplingParams(temperature=0 if i % 2 else 0.9, max_tokens=6 + i, seed=i) for i in range(16)]
    prompts = [f"Request {i} says" for i in range(16)]
    adapters = [adapter_a if i % 3 == 0 else None for i in range(16)]
    expected = [batch_engine.complete(tiny, adapters[i], prompts[i], params[i]) for i in range(16)]
    results = _concurrently([lambda i=i: batch_engine.complete(tiny, adapters[i], prompts[i], params[i]) for i in range(16)])
    assert all(isinstance(r, Generation) for r in results)
    assert [r.completion_tokens for r in results] == [6 + i for i in range(16)]
    assert results == expected
    assert batch_engine._batcher.max_rows_seen == 16


def test_tools_are_rendered_into_the_prompt(inference_engine, tiny, adapter_a, tmp_path):
    import shutil

    # SmolLM2's template ignores tools; an adapter dir whose template renders them.
    adapter = shutil.copytree(adapter_a, tmp_path / "tools")
    (adapter / "chat_template.jinja").write_text(
        "{% if tools %}Tools: {% for t in tools %}{{ t['function']['name'] }} {% endfor %}\n{% endif %}"
        "{% for m in messages %}<<{{ m['role'] }}>> {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<<assistant>>{% endif %}"
    )
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather in a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    params = SamplingParams(temperature=0, max_tokens=1)
    plain = inference_engine.chat(tiny, adapter, messages, params)
    with_tools = inference_engine.chat(tiny, adapter, messages, params, tools=tools)
    assert with_tools.prompt_tokens > plain.prompt_tokens
