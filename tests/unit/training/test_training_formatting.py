"""Loss masks through SmolLM2's real chat template: only trained assistant turns (+ <|im_end|>) carry labels."""

from __future__ import annotations

from tuneserve.data.records import Example
from tuneserve.training.formatting import IGNORE_INDEX, format_example, format_examples


def trained_text(tokenizer, formatted) -> list[str]:
    """The labelled stretches, decoded, one string per contiguous run."""
    runs, current = [], []
    for token, label in zip(formatted.input_ids, formatted.labels):
        if label == IGNORE_INDEX:
            if current:
                runs.append(tokenizer.decode(current))
                current = []
        else:
            assert label == token  # labels are the input ids themselves (the model shifts)
            current.append(token)
    if current:
        runs.append(tokenizer.decode(current))
    return runs


def test_only_the_assistant_answer_and_end_of_turn_are_labelled(tokenizer):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello!"},
    ]
    formatted = format_example(tokenizer, messages, 1024)
    assert formatted.input_ids == list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False))
    assert trained_text(tokenizer, formatted) == ["Hello!<|im_end|>"]
    # everything up to and including "<|im_start|>assistant\n" is masked; so is the "\n" after <|im_end|>
    first = formatted.labels.index(next(l for l in formatted.labels if l != IGNORE_INDEX))
    assert tokenizer.decode(formatted.input_ids[:first]).endswith("Hi there<|im_end|>\n<|im_start|>assistant\n")
    assert formatted.labels[-1] == IGNORE_INDEX and tokenizer.decode(formatted.input_ids[-1:]) == "\n"


def test_default_system_prompt_of_the_template_is_masked(tokenizer):
    formatted = format_example(tokenizer, [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}], 1024)
    assert "SmolLM" in tokenizer.decode(formatted.input_ids)  # the template injected its system prompt
    assert trained_text(tokenizer, formatted) == ["Yo<|im_end|>"]


def test_weight_zero_assistant_turns_are_context_only(tokenizer):
    messages = [
        {"role": "user", "content": "One"},
        {"role": "assistant", "content": "First answer", "weight": 0},
        {"role": "user", "content": "Two"},
        {"role": "assistant", "content": "Second answer", "weight": 1},
        {"role": "user", "content": "Three"},
        {"role": "assistant", "content": "Third answer"},
    ]
    formatted = format_example(tokenizer, messages, 1024)
    assert trained_text(tokenizer, formatted) == ["Second answer<|im_end|>", "Third answer<|im_end|>"]
    assert "First answer" in tokenizer.decode(formatted.input_ids)  # still in the input as context


def test_truncation_keeps_the_head_and_drops_examples_left_without_trained_tokens(tokenizer):
    short = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there, friend."}]
    long = [{"role": "user", "content": "word " * 200}, {"role": "assistant", "content": "Answer."}]
    full = format_example(tokenizer, short, 1024)
    cut = format_example(tokenizer, short, len(full.input_ids) - 3)
    assert cut.input_ids == full.input_ids[: len(full.input_ids) - 3]
    assert cut.labels == full.labels[: len(full.input_ids) - 3]
    assert 0 < cut.n_trained < full.n_trained

    kept, dropped = format_examples(tokenizer, [Example(tuple(short), 1), Example(tuple(long), 2)], 64)
    assert dropped == 1 and len(kept) == 1
    assert all(len(f.input_ids) <= 64 for f in kept)


def test_templates_that_rewrite_earlier_turns_fall_back_to_string_offsets(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    # Not prefix-stable: the first line depends on how many messages there are.
    tokenizer.chat_template = (
        "{{ messages|length }} turns\n{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    messages = [
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "A one", "weight": 0},
        {"role": "user", "content": "Q2"},
        {"role": "assistant", "content": "A two"},
    ]
    formatted = format_example(tokenizer, messages, 1024)
    assert tokenizer.decode(formatted.input_ids).startswith("4 turns\n")
    assert trained_text(tokenizer, formatted) == ["A two<|im_end|>"]
