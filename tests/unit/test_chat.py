"""`tuneserve chat`: an interactive loop over the inference engine, driven through stdin."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from rich.console import Console

from tests.conftest import TINY
from tuneserve.chat import chat_loop

SESSION = "hello\n/reset\nagain\n/exit\n"


def _chat_command() -> list[str]:
    """`python -m tuneserve chat` when the CLI has the subcommand, else `python -m tuneserve.chat` (the same loop)."""
    from tuneserve.cli import build_parser

    commands = next(a.choices for a in build_parser()._subparsers._group_actions if a.choices)
    return [sys.executable, "-m", "tuneserve", "chat"] if "chat" in commands else [sys.executable, "-m", "tuneserve.chat"]


def run_chat(*args: str, stdin: str = SESSION) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*_chat_command(), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"},
    )


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory, tiny_model_ready) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(2)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_ready),
        LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM"),
    )
    model.peft_config["default"].base_model_name_or_path = TINY
    out = tmp_path_factory.mktemp("chat-adapter") / "final"
    model.save_pretrained(out, save_embedding_layers=False)
    AutoTokenizer.from_pretrained(tiny_model_ready).save_pretrained(out)
    return out


class FakeEngine:
    """Records what the loop sends; streams a fixed answer as the new engine does (Delta, then Generation)."""

    def __init__(self, old_contract: bool = False, interrupt_on: str | None = None):
        self.calls: list[list[dict]] = []
        self.old_contract, self.interrupt_on, self.closed_streams = old_contract, interrupt_on, 0

    def stream_chat(self, base, adapter, messages, params, **kw):
        from tuneserve.inference.engine import Delta, Generation

        self.calls.append([dict(m) for m in messages])
        engine = self

        class Stream:
            def __iter__(self):
                for piece in ("Hi", " there", "!"):
                    if engine.interrupt_on == messages[-1]["content"] and piece == " there":
                        raise KeyboardInterrupt
                    yield piece if engine.old_contract else Delta(text=piece)
                yield Generation("Hi there!", "stop", 5, 3, None)

            def close(self):
                engine.closed_streams += 1

        return Stream()

    def close(self):
        pass


def loop(stdin: str, engine, **kw) -> tuple[int, str]:
    out = io.StringIO()
    code = chat_loop(
        TINY,
        data_dir=None,
        system=kw.pop("system", None),
        temperature=0.0,
        max_tokens=8,
        input_stream=io.StringIO(stdin),
        console=Console(file=out, width=200),
        engine=engine,
        **kw,
    )
    return code, out.getvalue()


@pytest.mark.parametrize("old_contract", [False, True])
def test_loop_keeps_history_and_resets(old_contract):
    engine = FakeEngine(old_contract)
    code, text = loop("one\ntwo\n/reset\nthree\n", engine, system="Be brief.")  # ends with EOF, not /exit
    assert code == 0 and text.count("Hi there!") == 3
    assert [len(c) for c in engine.calls] == [2, 4, 2]  # system + user; + assistant + user; reset to system + user
    assert engine.calls[1][2] == {"role": "assistant", "content": "Hi there!"}
    assert engine.calls[2] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "three"}]


def test_ctrl_c_stops_the_answer_and_returns_to_the_prompt():
    engine = FakeEngine(interrupt_on="stop me")
    code, text = loop("stop me\nnext\n/exit\n", engine)
    assert code == 0 and engine.closed_streams == 1 and "(stopped)" in text
    # The part that was shown stays in the conversation; the loop goes on.
    assert engine.calls[1] == [
        {"role": "user", "content": "stop me"},
        {"role": "assistant", "content": "Hi"},
        {"role": "user", "content": "next"},
    ]


def test_chat_with_the_real_engine_streams_deltas(tiny_model_ready):
    from tuneserve.inference.engine import Engine

    engine = Engine()
    try:
        code, text = loop("hello\n/exit\n", engine)
    finally:
        engine.close()
    assert code == 0 and ">>> hello" in text


def test_chat_subprocess_answers_twice_and_exits_0(tiny_model_ready):
    done = run_chat(TINY, "--temperature", "0", "--max-tokens", "6")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count(">>> ") == 4  # hello, /reset, again, /exit
    assert "(conversation cleared)" in done.stdout
    # The tiny random model answers greedily with 6 tokens and no EOS, so both answers end at max_tokens.
    answers = [chunk for chunk in done.stdout.split(">>> ")[1:] if chunk.startswith(("hello", "again"))]
    assert len(answers) == 2 and all("(stopped at --max-tokens 6)" in a for a in answers), done.stdout


def test_chat_subprocess_with_an_adapter_directory(adapter_dir):
    done = run_chat(str(adapter_dir), "--temperature", "0", "--max-tokens", "6", stdin="hello\n")  # EOF quits
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"adapter {adapter_dir.resolve()} on {TINY}" in " ".join(done.stdout.split())


def test_chat_subprocess_unknown_model_fails_clearly(tmp_path):
    done = run_chat("no-such/model-xyz")
    assert done.returncode != 0 and "unknown model 'no-such/model-xyz'" in done.stderr
    done = run_chat("ft:some:default::abc", "--data-dir", str(tmp_path))
    assert done.returncode != 0 and "no tuneserve data" in done.stderr
