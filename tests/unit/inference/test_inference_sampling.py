"""TextStream: incremental text with stop strings, on the real SmolLM2 tokenizer."""

from __future__ import annotations

from tuneserve.inference.sampling import TextStream


def _feed(tokenizer, text, stop=()):
    stream = TextStream(tokenizer, stop)
    deltas = [stream.add(i) for i in tokenizer(text, add_special_tokens=False)["input_ids"]]
    if not stream.stopped:
        deltas.append(stream.finish())
    return stream, [d for d in deltas if d]


def test_deltas_add_up_to_the_decoded_text(tokenizer):
    text = "Héllo wörld — 你好, emoji 🐈 end."
    stream, deltas = _feed(tokenizer, text)
    assert "".join(deltas) == stream.text == text
    assert not any("\ufffd" in d for d in deltas)  # half characters are held back


def test_stop_string_is_never_emitted_even_in_part(tokenizer):
    stream, deltas = _feed(tokenizer, "The answer is 4. ###END### more text", stop=("###END###",))
    assert stream.stopped
    assert "".join(deltas) == stream.text == "The answer is 4. "
    assert not any("#" in d for d in deltas)


def test_earliest_of_several_stop_strings_wins(tokenizer):
    stream, deltas = _feed(tokenizer, "alpha beta gamma delta", stop=("delta", "beta", ""))
    assert stream.text == "alpha " and "".join(deltas) == "alpha "


def test_held_back_prefix_is_released_when_it_is_no_stop(tokenizer):
    stream, deltas = _feed(tokenizer, "a #### b ##", stop=("###END",))
    assert not stream.stopped
    assert "".join(deltas) == "a #### b ##"
