"""The synthesis pipeline's logic with a scripted endpoint: generation, parsing, template echoes,
duplicates, curation with logged reasons, the held-out split, resume after failures, the clean
"nothing usable" end, fatal endpoint errors, the rate limiter and the prompt config."""

from __future__ import annotations

import json
import re
from pathlib import Path

import openai
import pytest

from tests.unit.synthesis.conftest import ScriptedClient, connection_error, status_error
from tuneserve.data import validate_file
from tuneserve.synthesis.documents import approximate_counter
from tuneserve.synthesis.rate_limit import RateLimiter
from tuneserve.synthesis.synthesize import (
    SynthesisError,
    SynthOptions,
    load_prompt_config,
    state_dir,
    summary_path,
    synthesize,
)

COUNTER = approximate_counter(context_window=2048)
TOPICS = ["Albedo", "Anarchism", "Autism", "Aristotle"]


@pytest.fixture
def docs(tmp_path) -> Path:
    """Two documents, four paragraphs, one topic each: with 20-token chunks (4 characters a token), one chunk per paragraph."""
    root = tmp_path / "docs"
    root.mkdir()
    (root / "a.md").write_text(
        f"# {TOPICS[0]}\n{TOPICS[0]} measures how much light a surface reflects.\n\n"
        f"{TOPICS[1]} is a philosophy that rejects coercive hierarchy.\n",
        encoding="utf-8",
    )
    (root / "b.txt").write_text(
        f"{TOPICS[2]} is a neurodevelopmental condition.\n\n{TOPICS[3]} was a Greek philosopher and polymath.\n", encoding="utf-8"
    )
    return root


def topic_of(request) -> str:
    return next(t for t in TOPICS if t in request["messages"][-1]["content"])


def pairs_reply(topic: str, n: int = 2) -> str:
    items = [
        {
            "Question": f"What is question {i} about {topic}?",
            "Answer": f"Answer {i}: {topic} facts.",
            "Context": f"{topic} sentence.",
        }
        for i in range(n)
    ]
    return "Here you go:\n```json\n" + json.dumps(items, indent=2) + "\n```\nAnything else?"


def options(docs: Path, tmp_path: Path, **overrides) -> SynthOptions:
    values = dict(
        documents=[docs],
        model="writer",
        output=tmp_path / "out" / "train.jsonl",
        questions_per_chunk=2,
        chunk_tokens=20,
        concurrency=2,
    )
    return SynthOptions(**{**values, **overrides})


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_generates_valid_chat_jsonl_and_counts_every_rejection(docs, tmp_path):
    def respond(request):
        topic = topic_of(request)
        if topic == "Autism":  # the prompt's example, echoed
            return '[{"question": "...", "answer": "...", "context": "..."}]'
        if topic == "Aristotle":  # repeats a question of another chunk, and adds one of its own
            return json.dumps(
                [
                    {"question": "What is question 0 about Albedo?", "answer": "Again."},
                    {"question": "Who taught Alexander?", "answer": "Aristotle."},
                ]
            )
        return pairs_reply(topic)

    client = ScriptedClient(respond)
    summary = synthesize(options(docs, tmp_path, eval_split=0.25), client, COUNTER)

    assert len(client.calls) == summary["chunks"] == 4 and summary["replies"] == 4
    assert client.calls[0]["model"] == "writer" and client.calls[0]["messages"][0]["role"] == "system"
    assert "2 question and answer pairs" in client.calls[0]["messages"][0]["content"]
    assert summary["generated"] == 7 and summary["parsed"] == 7
    assert summary["rejected"] == {"duplicate": 1, "template_echo": 1}
    assert summary["kept"] == 5 and summary["train"] + summary["eval"] == 5 and summary["eval"] == 1
    assert summary["usable"] and summary["message"].startswith("wrote 4 training examples")

    train, held_out = Path(summary["output"]), Path(summary["eval_output"])
    assert held_out.name == "train.valid.jsonl"
    for path, n in ((train, 4), (held_out, 1)):
        report = validate_file(path)
        assert report.ok and report.format == "chat" and report.n_examples == n
    records = read_jsonl(train) + read_jsonl(held_out)
    questions = [r["messages"][0]["content"] for r in records]
    assert sorted(questions) == sorted(
        [
            "What is question 0 about Albedo?",
            "What is question 1 about Albedo?",
            "What is question 0 about Anarchism?",
            "What is question 1 about Anarchism?",
            "Who taught Alexander?",
        ]
    )
    assert all([m["role"] for m in r["messages"]] == ["user", "assistant"] for r in records)
    assert json.loads(summary_path(options(docs, tmp_path).output).read_text()) == summary


def test_curation_keeps_yes_drops_no_and_unreadable_and_logs_reasons(docs, tmp_path):
    writer = ScriptedClient(lambda request: pairs_reply(topic_of(request), n=1))

    def judge_reply(request):
        user = request["messages"][-1]["content"]
        assert request["model"] == "judge" and f"Context: {topic_of(request)} sentence." in user  # the pair's own context
        if "Albedo" in user:
            return '{"reason": "Grounded in the context.", "result": "YES"}'
        if "Anarchism" in user:
            return "NO - the answer does not match the context."
        if "Autism" in user:
            return "I think this is a fine question."  # no verdict
        return "**Yes**, it is correct."

    judge = ScriptedClient(judge_reply)
    summary = synthesize(options(docs, tmp_path, curate=True, judge_model="judge"), writer, COUNTER, judge_client=judge)

    assert len(judge.calls) == 4 and all(c["temperature"] == 0.0 for c in judge.calls)
    assert summary["kept"] == 2 and summary["rejected"] == {"judge_no": 1, "judge_unparseable": 1}
    kept = {r["messages"][0]["content"] for r in read_jsonl(Path(summary["output"]))}
    assert kept == {"What is question 0 about Albedo?", "What is question 0 about Aristotle?"}
    log = {r["question"]: r for r in read_jsonl(state_dir(tmp_path / "out" / "train.jsonl") / "curation.jsonl")}
    assert log["What is question 0 about Albedo?"]["reason"] == "Grounded in the context."
    assert log["What is question 0 about Anarchism?"]["verdict"] == "NO"
    assert log["What is question 0 about Anarchism?"]["reason"] == "the answer does not match the context."
    assert log["What is question 0 about Autism?"]["verdict"] is None
    assert log["What is question 0 about Autism?"]["reply"] == "I think this is a fine question."  # the raw reply, kept


def test_a_rerun_skips_finished_chunks_and_retries_failed_ones(docs, tmp_path):
    def flaky(request):
        if topic_of(request) == "Autism":
            return status_error(openai.InternalServerError, 503, "overloaded")
        return pairs_reply(topic_of(request))

    first = synthesize(options(docs, tmp_path), ScriptedClient(flaky), COUNTER)
    assert first["failed_requests"] == 1 and first["kept"] == 6

    # A crash mid-write leaves a torn last line: it is ignored.
    with (state_dir(tmp_path / "out" / "train.jsonl") / "generated.jsonl").open("a") as f:
        f.write('{"key": "torn')
    healthy = ScriptedClient(lambda request: pairs_reply(topic_of(request)))
    second = synthesize(options(docs, tmp_path), healthy, COUNTER)
    assert [topic_of(c) for c in healthy.calls] == ["Autism"]
    assert second["failed_requests"] == 0 and second["kept"] == 8
    assert len(read_jsonl(Path(second["output"]))) == 8

    # Other settings are another run: every chunk is asked again.
    again = ScriptedClient(lambda request: pairs_reply(topic_of(request), n=1))
    third = synthesize(options(docs, tmp_path, questions_per_chunk=1), again, COUNTER)
    assert len(again.calls) == 4 and third["kept"] == 4


def test_nothing_usable_is_said_plainly_and_writes_no_training_file(docs, tmp_path):
    out = tmp_path / "out" / "train.jsonl"
    out.parent.mkdir()
    out.write_text('{"messages": "stale from an earlier run"}\n')
    replies = iter(["The document discusses albedo.", '[{"question": "Half?"}]', "", '{"unrelated": 1}'])
    client = ScriptedClient(lambda request: next(replies))
    summary = synthesize(options(docs, tmp_path, concurrency=1, eval_split=0.5), client, COUNTER)

    assert summary["usable"] is False and summary["kept"] == 0
    assert summary["rejected"] == {"missing_answer": 1, "unparseable_reply": 3}
    assert summary["message"].startswith("nothing usable: writer gave 4 replies for 4 chunks")
    assert summary["output"] is None and not out.exists() and not (out.parent / "train.valid.jsonl").exists()
    assert json.loads(summary_path(out).read_text())["usable"] is False


@pytest.mark.parametrize(
    "error, message",
    [
        (status_error(openai.NotFoundError, 404, "The model 'writer' does not exist"), "does not exist"),
        (status_error(openai.AuthenticationError, 401, "Incorrect API key provided"), "Incorrect API key"),
        (connection_error(), "cannot reach the endpoint"),
    ],
)
def test_an_endpoint_that_refuses_everything_stops_the_run_and_keeps_the_state(docs, tmp_path, error, message):
    calls = iter([pairs_reply("Albedo"), error, error, error])
    client = ScriptedClient(lambda request: next(calls))
    with pytest.raises(SynthesisError, match=message):
        synthesize(options(docs, tmp_path, concurrency=1), client, COUNTER)
    assert len(client.calls) == 2  # nothing is asked after the refusal
    state = read_jsonl(state_dir(tmp_path / "out" / "train.jsonl") / "generated.jsonl")
    assert len(state) == 1 and "Albedo" in state[0]["text"]


def test_documents_without_text(tmp_path):
    (tmp_path / "empty.md").write_text("\n\n  \n")
    client = ScriptedClient(lambda request: pytest.fail("nothing to ask"))
    summary = synthesize(options(tmp_path, tmp_path, documents=[tmp_path / "empty.md"]), client, COUNTER)
    assert summary["usable"] is False and summary["chunks"] == 0
    assert summary["message"] == "nothing usable: the 1 document(s) hold no text. No training file was written."


def test_system_prompt_and_max_chunks(docs, tmp_path):
    config = load_prompt_config().model_copy(update={"system_prompt": "You answer questions about the documents."})
    client = ScriptedClient(lambda request: pairs_reply(topic_of(request), n=1))
    summary = synthesize(options(docs, tmp_path, config=config, max_chunks=2), client, COUNTER)
    assert summary["chunks"] == 2 and len(client.calls) == 2
    records = read_jsonl(Path(summary["output"]))
    assert [m["role"] for m in records[0]["messages"]] == ["system", "user", "assistant"]
    assert records[0]["messages"][0]["content"] == "You answer questions about the documents."


def test_chunks_are_sized_from_the_context_window_when_not_given(docs, tmp_path):
    big = tmp_path / "big.txt"
    big.write_text("\n\n".join(f"{TOPICS[i % 4]} paragraph {i}. " + "filler words here " * 20 for i in range(40)))
    client = ScriptedClient(lambda request: pairs_reply(topic_of(request), n=1))
    summary = synthesize(
        options(docs, tmp_path, documents=[big], chunk_tokens=None, max_tokens=200),
        client,
        approximate_counter(context_window=1024),
    )
    # 1024 - prompt (~140) - reply (200) - template overhead (32) leaves about 650 tokens per chunk.
    assert 600 <= summary["chunk_tokens"] <= 700
    assert all(len(c["messages"][-1]["content"]) / 4 <= summary["chunk_tokens"] for c in client.calls)
    assert summary["chunks"] == len(client.calls) >= 4


# --- the rate limiter ---------------------------------------------------------------------------


class FakeClock:
    def __init__(self):
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_requests_per_minute():
    clock = FakeClock()
    limiter = RateLimiter(rpm=2, clock=clock, sleep=clock.sleep)
    assert limiter.acquire() == 0 and limiter.acquire() == 0
    clock.now = 10.0
    assert limiter.acquire() == pytest.approx(50.0)  # waits for the first request to leave the window
    assert clock.now == pytest.approx(60.0)


def test_tokens_per_minute_and_an_oversized_request_goes_alone():
    clock = FakeClock()
    limiter = RateLimiter(tpm=1000, clock=clock, sleep=clock.sleep)
    limiter.acquire(600)
    clock.now = 30.0
    assert limiter.acquire(300) == 0  # 900 <= 1000
    assert limiter.acquire(200) == pytest.approx(30.0)  # 1100 > 1000: wait until the 600 leave (t=60)
    clock.now = 200.0
    assert limiter.acquire(5000) == 0  # larger than the budget: sent alone once the window is empty
    assert limiter.acquire(1) == pytest.approx(60.0)
    with pytest.raises(ValueError):
        RateLimiter(rpm=0)


def test_no_limits_never_wait():
    limiter = RateLimiter(sleep=lambda s: pytest.fail("slept"))
    assert all(limiter.acquire(10**9) == 0 for _ in range(100))


# --- the prompt config --------------------------------------------------------------------------


def test_default_prompts_and_a_partial_override(tmp_path):
    default = load_prompt_config()
    assert "{num_questions}" in default.question_prompt_template and default.language == "English"
    custom = tmp_path / "prompts.yaml"
    custom.write_text("language: German\nsystem_prompt: Du bist hilfsbereit.\n")
    config = load_prompt_config(custom)
    assert config.language == "German" and config.system_prompt == "Du bist hilfsbereit."
    assert config.question_prompt_template == default.question_prompt_template


@pytest.mark.parametrize(
    "yaml_text, message",
    [
        ("question_prompt_template: 'Write {n} pairs'\n", "question_prompt_template uses an unknown placeholder {n}"),
        ("curation_user_template: 'Q: {question'\n", "curation_user_template: "),
        ("temperature: 0.3\n", "temperature"),
        ("- a list\n", "must be a YAML mapping"),
        ("question_prompt_template: [unclosed\n", "cannot read the prompt config"),
    ],
)
def test_bad_prompt_configs_name_the_problem(tmp_path, yaml_text, message):
    path = tmp_path / "prompts.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ValueError, match=re.escape(message)):
        load_prompt_config(path)


# --- the command line ---------------------------------------------------------------------------


def test_cli_refuses_bad_arguments_and_an_unreachable_endpoint_cleanly(docs, tmp_path, capsys):
    from tests.conftest import free_port
    from tuneserve.cli import main

    base = ["data", "synthesize", str(docs), "--model", "m", "--output", str(tmp_path / "t.jsonl")]
    assert main([*base, "--base-url", "http://127.0.0.1:1/v1", "--eval-split", "1.5"]) == 1
    assert "--eval-split must be in [0, 1)" in capsys.readouterr().err
    assert main([*base, "--base-url", "ftp://host/v1"]) == 1
    assert "not an http(s) URL" in capsys.readouterr().err
    code = main([*base, "--base-url", f"http://127.0.0.1:{free_port()}", "--retries", "0", "--context-window", "2048"])
    err = capsys.readouterr().err
    assert code == 1 and "cannot reach the endpoint" in err and "rerun to resume" in err
    assert "Traceback" not in err
