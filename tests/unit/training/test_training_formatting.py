"""Loss masks through SmolLM2's real chat template: only trained assistant turns (+ <|im_end|>) carry labels;
tool calls are trained, tool outputs are not; raw text trains every token; preference pairs are refused."""

from __future__ import annotations

import json

import pytest

from tuneserve.data import load_examples
from tuneserve.data.records import DataError, Example, PreferenceExample, TextExample
from tuneserve.data.formatting import IGNORE_INDEX, format_example, format_examples, format_text, renders_tool_calls


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
    first = formatted.labels.index(next(label for label in formatted.labels if label != IGNORE_INDEX))
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


# -- tools and tool calls --------------------------------------------------------------------------

WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
}
TOOL_CONVERSATION = [
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}],
    },
    {"role": "tool", "content": "SECRET-TOOL-OUTPUT 21C", "tool_call_id": "c1", "name": "get_weather"},
    {"role": "assistant", "content": "It is 21C in Paris."},
]


def test_smollm2_ignores_tool_calls_so_they_are_written_into_the_turn(tokenizer):
    assert not renders_tool_calls(tokenizer)
    formatted = format_example(tokenizer, TOOL_CONVERSATION, 1024, tools=[WEATHER])
    trained = trained_text(tokenizer, formatted)
    # the call turn teaches the call (not an empty turn); the tool output is context only
    assert trained == [
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>',
        "It is 21C in Paris.<|im_end|>",
    ]
    text = tokenizer.decode(formatted.input_ids)
    assert "<|im_start|>tool\nSECRET-TOOL-OUTPUT 21C<|im_end|>" in text
    assert not any("SECRET" in run for run in trained)


# A template in the style of Qwen/Hermes: it lists the tools and renders tool calls with their arguments as JSON.
TOOL_TEMPLATE = (
    "{% if tools %}<|im_start|>system\nTools:{% for t in tools %} {{ t.function.name }}{% endfor %}<|im_end|>\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content or '' }}"
    "{% for c in m.tool_calls or [] %}<call>{{ c.function.name }} {{ c.function.arguments | tojson }}</call>{% endfor %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_a_template_that_supports_tools_renders_them(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = TOOL_TEMPLATE
    assert renders_tool_calls(tokenizer)
    formatted = format_example(tokenizer, TOOL_CONVERSATION, 1024, tools=[WEATHER])
    text = tokenizer.decode(formatted.input_ids)
    assert text.startswith("<|im_start|>system\nTools: get_weather<|im_end|>\n")
    # arguments reach the template as an object (not a JSON string encoded twice)
    assert '<call>get_weather {"city": "Paris"}</call>' in text
    assert trained_text(tokenizer, formatted) == [
        '<call>get_weather {"city": "Paris"}</call><|im_end|>',
        "It is 21C in Paris.<|im_end|>",
    ]


def test_real_glaive_toolcall_data_formats_and_masks_tool_outputs(tokenizer, sample_file):
    examples = load_examples(sample_file("glaive_toolcall_en_demo.json"))
    formatted, dropped = format_examples(tokenizer, examples, 100_000)
    assert dropped == 0 and len(formatted) == 300
    checked = 0
    for example, f in zip(examples, formatted):
        assert f.n_trained > 0
        runs = trained_text(tokenizer, f)
        trained_turns = example.trained_messages()
        assert len(runs) == len(trained_turns)  # one labelled run per assistant turn, tool-call turns included
        for run, turn in zip(runs, trained_turns):
            assert run.endswith("<|im_end|>")
            if turn.get("tool_calls"):
                call = turn["tool_calls"][0]["function"]
                assert run.startswith("<tool_call>\n") and json.loads(run.split("\n")[1]) == {
                    "name": call["name"],
                    "arguments": json.loads(call["arguments"]),
                }
        for tool in (m for m in example.messages if m["role"] == "tool"):  # tool outputs: in the input, never labelled
            assert tool["content"] in tokenizer.decode(f.input_ids)
            assert not any(tool["content"] in run for run in runs)
            checked += 1
    assert checked == 211


# -- raw text and preference pairs ----------------------------------------------------------------


def test_text_is_tokenized_as_is_with_every_token_trained(tokenizer):
    text = "<|im_start|>user\nHi<|im_end|>\nPlain words follow."
    formatted = format_text(tokenizer, text, 1024)
    assert formatted.input_ids == tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(formatted.input_ids) == text  # no template, nothing added
    assert formatted.input_ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>")  # special tokens in the text stay special
    assert formatted.labels == formatted.input_ids and formatted.n_trained == len(formatted.input_ids)
    cut = format_text(tokenizer, text, 5)
    assert cut.input_ids == formatted.input_ids[:5] and cut.labels == cut.input_ids


def test_format_examples_takes_text_and_refuses_preference_pairs(tokenizer):
    kept, dropped = format_examples(tokenizer, [TextExample("Some document text.", 1), TextExample("a", 2)], 64)
    assert len(kept) == 1 and dropped == 1  # a one-token text has nothing to predict
    pair = PreferenceExample(
        prompt=({"role": "user", "content": "q"},),
        chosen={"role": "assistant", "content": "a"},
        rejected={"role": "assistant", "content": "b"},
        line=7,
    )
    with pytest.raises(DataError) as info:
        format_examples(tokenizer, [pair], 64)
    assert info.value.line == 7 and "preference data needs method dpo" in str(info.value)
