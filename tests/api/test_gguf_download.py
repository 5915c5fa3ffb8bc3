"""GET /v1/fine_tuning/jobs/{id}/download?type=gguf through a real server: a tar.gz of the GGUF and its Ollama Modelfile,
that transformers' GGUF loader and (when llama-cpp-python is installed) llama.cpp itself answer exactly as the server."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import httpx
import pytest

from tests.conftest import chat_jsonl, fine_tune_tiny, hf_greedy_ids

# What the job was trained on (answered with its training answer) and one it was not.
QUESTIONS = [
    "Question 3: what is the capital of Zorbia?",
    "Question 11: what is the capital of Zorbia?",
    "What is the capital of Zorbia?",
]
MAX_TOKENS = 12


@pytest.fixture(scope="module")
def tuned(server):
    return fine_tune_tiny(server.client(), chat_jsonl(12), "gguf", seed=7, n_epochs=2, learning_rate_multiplier=10)


def download(server, job_id: str, **params) -> httpx.Response:
    return httpx.get(f"{server.base_url}/v1/fine_tuning/jobs/{job_id}/download", params=params, timeout=300)


@pytest.fixture(scope="module")
def served(server, tuned) -> list[tuple[str, list[bytes]]]:
    """The server's own greedy answers to QUESTIONS: (text, each generated token's bytes, from logprobs)."""
    client = server.client()
    answers = []
    for question in QUESTIONS:
        choice = client.chat.completions.create(
            model=tuned.fine_tuned_model,
            messages=[{"role": "user", "content": question}],
            temperature=0,
            max_tokens=MAX_TOKENS,
            logprobs=True,
        ).choices[0]
        answers.append((choice.message.content, [bytes(t.bytes) for t in choice.logprobs.content]))
    return answers


@pytest.fixture(scope="module")
def gguf_download(server, tuned, tmp_path_factory) -> tuple[httpx.Response, Path]:
    """The f16 GGUF download and the folder it unpacks to."""
    reply = download(server, tuned.id, type="gguf")
    assert reply.status_code == 200, reply.text
    into = tmp_path_factory.mktemp("gguf")
    with tarfile.open(fileobj=io.BytesIO(reply.content), mode="r:gz") as tar:
        tar.extractall(into, filter="data")
    return reply, into / f"{tuned.id}-gguf-f16"


def test_gguf_download_is_a_gguf_and_its_modelfile_built_once(server, tuned, gguf_download):
    reply, root = gguf_download
    top = f"{tuned.id}-gguf-f16"
    assert reply.headers["content-type"] == "application/gzip"
    assert int(reply.headers["content-length"]) == len(reply.content)
    assert f'filename="{top}.tar.gz"' in reply.headers["content-disposition"]
    assert sorted(p.name for p in root.iterdir()) == ["Modelfile", f"{top}.gguf"]
    assert (root / f"{top}.gguf").read_bytes()[:4] == b"GGUF"
    modelfile = (root / "Modelfile").read_text()
    assert f"FROM ./{top}.gguf" in modelfile and "<|im_start|>{{ .Role }}" in modelfile
    assert 'PARAMETER stop "<|im_end|>"' in modelfile

    # Built once: cached in the job's exports/ and served again as the same bytes.
    assert (server.data_dir / "jobs" / tuned.id / "exports" / f"{top}.tar.gz").is_file()
    assert download(server, tuned.id, type="gguf", quant="f16").content == reply.content


def test_gguf_download_answers_as_the_server_does_in_transformers(tuned, gguf_download, served):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, root = gguf_download
    name = f"{tuned.id}-gguf-f16.gguf"
    model = AutoModelForCausalLM.from_pretrained(root, gguf_file=name, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(root, gguf_file=name)
    answers = [tokenizer.decode(hf_greedy_ids(model, tokenizer, q, MAX_TOKENS), skip_special_tokens=True) for q in QUESTIONS]
    assert answers == [text for text, _ in served]
    assert served[0][0].startswith("The capital of Z")  # the fine-tuning took: the comparison is of a trained model


def test_gguf_q8_0_and_refusals(server, tuned):
    q8 = download(server, tuned.id, type="gguf", quant="q8_0")
    assert q8.status_code == 200
    assert f'filename="{tuned.id}-gguf-q8_0.tar.gz"' in q8.headers["content-disposition"]
    with tarfile.open(fileobj=io.BytesIO(q8.content), mode="r:gz") as tar:
        assert sorted(tar.getnames()) == [f"{tuned.id}-gguf-q8_0/Modelfile", f"{tuned.id}-gguf-q8_0/{tuned.id}-gguf-q8_0.gguf"]
    bad_quant = download(server, tuned.id, type="gguf", quant="q4_0")
    assert bad_quant.status_code == 400 and bad_quant.json()["error"]["param"] == "quant"
    # quant belongs to gguf; with another type it is ignored (the schema allows it, so it is not refused).
    adapter = download(server, tuned.id, type="adapter", quant="q8_0")
    assert adapter.status_code == 200 and f'filename="{tuned.id}-adapter.tar.gz"' in adapter.headers["content-disposition"]


# ---- llama.cpp itself --------------------------------------------------------------------------------


def _llama_cpp_python() -> str | None:
    """An interpreter that imports llama_cpp: this one, or $TUNESERVE_LLAMA_CPP_PYTHON (llama-cpp-python compiles
    llama.cpp, so it is kept out of the project's dependencies and may live in a venv of its own)."""
    if importlib.util.find_spec("llama_cpp") is not None:
        return sys.executable
    return os.environ.get("TUNESERVE_LLAMA_CPP_PYTHON") or None


# Run in its own process: llama.cpp's native code and its logging stay out of the test process.
LLAMA_GREEDY = """
import json, sys
from llama_cpp import Llama
path, prompts, max_tokens = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
lora = sys.argv[4] if len(sys.argv) > 4 else None  # a LoRA GGUF applied on the model, as llama-server's --lora does
llm = Llama(model_path=path, lora_path=lora, n_ctx=512, n_threads=1, seed=0, verbose=False)
result = []
for prompt in prompts:
    ids = llm.tokenize(prompt.encode(), add_bos=False, special=True)
    out = []
    llm.reset()
    for token in llm.generate(ids, temp=0.0, top_k=1, top_p=1.0, repeat_penalty=1.0):
        if token == llm.token_eos() or len(out) == max_tokens:
            break
        out.append(token)
    result.append({"prompt_ids": ids, "answer": [list(llm.detokenize([t])) for t in out]})
print(json.dumps(result))
"""


def llama_cpp_greedy(tokenizer, gguf: Path, lora: Path | None = None) -> tuple[list[str], list[dict]]:
    """(the chat prompts of QUESTIONS, llama.cpp's greedy answer to each: its prompt ids and answer token bytes)."""
    prompts = [
        tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False)
        for q in QUESTIONS
    ]
    command = [_llama_cpp_python(), "-c", LLAMA_GREEDY, str(gguf), json.dumps(prompts), str(MAX_TOKENS)]
    done = subprocess.run([*command, *([str(lora)] if lora else [])], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return prompts, json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(_llama_cpp_python() is None, reason="llama-cpp-python is not installed (or TUNESERVE_LLAMA_CPP_PYTHON)")
def test_llama_cpp_answers_token_for_token_as_the_server(tuned, gguf_download, served):
    from transformers import AutoTokenizer

    _, root = gguf_download
    gguf = root / f"{tuned.id}-gguf-f16.gguf"
    tokenizer = AutoTokenizer.from_pretrained(root, gguf_file=gguf.name)
    prompts, results = llama_cpp_greedy(tokenizer, gguf)
    print("llama.cpp's greedy answers, as the server's:", [text for text, _ in served])
    for prompt, result, (_, tokens) in zip(prompts, results, served, strict=True):
        # llama.cpp cuts the chat prompt into the very tokens tuneserve does (template, special tokens, pre-tokenizer).
        assert result["prompt_ids"] == tokenizer(prompt, add_special_tokens=False)["input_ids"]
        # And answers with the server's greedy tokens, one for one (compared as each token's bytes: re-tokenizing the
        # answer's text would merge a generated "." "." into one "..").
        assert [bytes(t) for t in result["answer"]] == tokens


# ---- the LoRA adapter alone, for llama.cpp's --lora --------------------------------------------------


@pytest.fixture(scope="module")
def lora_download(server, tuned, tmp_path_factory) -> Path:
    reply = download(server, tuned.id, type="gguf-lora")
    assert reply.status_code == 200, reply.text
    top = f"{tuned.id}-gguf-lora-f16"
    assert f'filename="{top}.tar.gz"' in reply.headers["content-disposition"]
    into = tmp_path_factory.mktemp("lora")
    with tarfile.open(fileobj=io.BytesIO(reply.content), mode="r:gz") as tar:
        assert tar.getnames() == [f"{top}/{top}.gguf"]
        tar.extractall(into, filter="data")
    return into / top / f"{top}.gguf"


def test_gguf_lora_download_is_a_small_llama_cpp_adapter(tuned, lora_download, gguf_download):
    from gguf import GGUFReader

    reader = GGUFReader(lora_download)
    assert reader.fields["general.type"].contents() == "adapter" and reader.fields["adapter.type"].contents() == "lora"
    names = {t.name for t in reader.tensors}
    assert "blk.0.attn_q.weight.lora_a" in names and "blk.1.ffn_down.weight.lora_b" in names  # the tiny model's 2 blocks
    # The adapter alone, without the base's weights (the embeddings above all).
    assert lora_download.stat().st_size * 20 < (gguf_download[1] / f"{tuned.id}-gguf-f16.gguf").stat().st_size


@pytest.mark.skipif(_llama_cpp_python() is None, reason="llama-cpp-python is not installed (or TUNESERVE_LLAMA_CPP_PYTHON)")
def test_llama_cpp_with_the_lora_gguf_on_the_base_answers_as_the_server(tuned, lora_download, served, tmp_path):
    """The base model as GGUF plus the LoRA GGUF, applied by llama.cpp at run time (unmerged), answers as tuneserve
    serves the fine-tuned model; the base alone does not (so the adapter is what makes the answers)."""
    from transformers import AutoTokenizer

    from tuneserve.gguf_export import write_gguf
    from tuneserve.models import resolve_model

    base = write_gguf(resolve_model(tuned.model), tmp_path / "base-f16.gguf")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path, gguf_file=base.name)
    _, with_lora = llama_cpp_greedy(tokenizer, base, lora_download)
    _, base_only = llama_cpp_greedy(tokenizer, base)
    print("llama.cpp + LoRA GGUF:", [b"".join(bytes(t) for t in r["answer"]).decode() for r in with_lora])
    assert [[bytes(t) for t in r["answer"]] for r in with_lora] == [tokens for _, tokens in served]
    assert [[bytes(t) for t in r["answer"]] for r in base_only] != [tokens for _, tokens in served]
