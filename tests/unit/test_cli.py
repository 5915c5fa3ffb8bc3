"""The `tuneserve` command as a user runs it: train a spec without a server, validate data."""

import json
import subprocess
import sys

import pytest


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "tuneserve", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.mark.training
@pytest.mark.parametrize("spec_name", ["spec.yaml", "spec.json"])
def test_train_spec_without_server(tmp_path, tiny_model_ready, spec_name):
    (tmp_path / "data.jsonl").write_text(
        "".join(
            json.dumps({"messages": [{"role": "user", "content": f"Hi {i}"}, {"role": "assistant", "content": "Hello there."}]})
            + "\n"
            for i in range(8)
        )
    )
    spec = {
        "model": "tuneserve/tiny-random",
        "training_file": "data.jsonl",
        "seed": 3,
        "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 4}}},
        "lora": {"r": 8, "alpha": 16},
    }
    text = json.dumps(spec) if spec_name.endswith(".json") else "\n".join(f"{k}: {json.dumps(v)}" for k, v in spec.items())
    (tmp_path / spec_name).write_text(text)

    result = run("train", spec_name, "--output-dir", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    final = json.loads(result.stdout.strip().splitlines()[-1])
    assert final.keys() >= {"trained_tokens", "train_runtime_s", "train_loss", "model_path", "adapter_path"}
    assert final["trained_tokens"] > 0 and final["train_runtime_s"] > 0
    assert final["adapter_path"] == str((tmp_path / "out" / "final").resolve()) or final["adapter_path"].endswith("out/final")
    adapter = json.loads((tmp_path / "out" / "final" / "adapter_config.json").read_text())
    assert adapter["r"] == 8 and adapter["lora_alpha"] == 16
    resolved = json.loads((tmp_path / "out" / "spec.json").read_text())
    assert resolved["hyperparameters"]["n_epochs"] == 2 and resolved["training_file"] == str(tmp_path / "data.jsonl")


@pytest.mark.training
def test_train_holds_out_a_split_and_says_which_checkpoint_it_kept(tmp_path, tiny_model_ready):
    """With no validation file and a split asked for in the spec, the CLI's run judges itself as the server's does:
    the terminal says what it held out and which checkpoint the result is; the result line carries it too."""
    (tmp_path / "data.jsonl").write_text(
        "".join(
            json.dumps({"messages": [{"role": "user", "content": f"Hi {i}"}, {"role": "assistant", "content": "Hello there."}]})
            + "\n"
            for i in range(30)
        )
    )
    (tmp_path / "spec.yaml").write_text(
        "model: tuneserve/tiny-random\ntraining_file: data.jsonl\nhyperparameters: {n_epochs: 2, batch_size: 4}\n"
        "validation_split: 0.1\nearly_stopping_patience: 2\n"
    )
    result = run("train", "spec.yaml", "--output-dir", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    kept = json.loads(result.stdout.strip().splitlines()[-1])["kept_checkpoint"]
    assert kept["step"] in (7, 14) and kept["epoch"] in (1, 2)  # 26 examples, batch 4: 7 steps an epoch
    words = " ".join(result.stderr.split())  # rich wraps long lines at the terminal's width
    assert "Held out 4 of 30 training examples" in words  # 10% is 3; the floor is 4
    assert " ".join(kept["reason"].split()) in words
    final = (tmp_path / "out" / "final" / "adapter_model.safetensors").read_bytes()
    assert final == (tmp_path / "out" / "checkpoints" / f"step-{kept['step']}" / "adapter_model.safetensors").read_bytes()


@pytest.mark.training
def test_train_with_no_output_dir_writes_under_the_working_directory(tmp_path, tiny_model_ready):
    """The default --output-dir is ./tuneserve-runs/SPEC_NAME, relative to where the command runs."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "chat.jsonl").write_text(
        "".join(
            json.dumps({"messages": [{"role": "user", "content": f"Hi {i}"}, {"role": "assistant", "content": "Hello."}]}) + "\n"
            for i in range(8)
        )
    )
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "hello.yaml").write_text(
        "model: tuneserve/tiny-random\ntraining_file: ../data/chat.jsonl\nhyperparameters: {n_epochs: 1, batch_size: 4}\n"
    )
    result = run("train", "specs/hello.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "tuneserve-runs" / "hello"
    assert json.loads(result.stdout.strip().splitlines()[-1])["adapter_path"] == str(out / "final")
    assert (out / "final" / "adapter_config.json").is_file()


def test_train_reports_bad_spec_without_traceback(tmp_path):
    (tmp_path / "spec.yaml").write_text("model: tuneserve/tiny-random\n")
    result = run("train", "spec.yaml", "--output-dir", "out", cwd=tmp_path)
    assert result.returncode == 2 and "training_file" in result.stderr and "Traceback" not in result.stderr


def test_data_validate_exit_codes(tmp_path):
    good, bad = tmp_path / "good.jsonl", tmp_path / "bad.jsonl"
    good.write_text(json.dumps({"prompt": "a", "completion": "b"}) + "\n")
    bad.write_text(json.dumps({"prompt": "a", "completion": "b"}) + "\n{broken\n")
    assert run("data", "validate", str(good)).returncode == 0
    result = run("data", "validate", str(bad), "--json")
    assert result.returncode == 1
    assert json.loads(result.stdout)["errors"][0]["line"] == 2


def test_data_convert_alpaca_to_prompt_completion_with_split(tmp_path):
    src = tmp_path / "finance_alpaca.json"
    src.write_text(json.dumps([{"instruction": f"Q{i}", "input": "", "output": f"A{i}"} for i in range(20)]))
    result = run("data", "convert", str(src), str(tmp_path / "oci.jsonl"), "--to", "prompt-completion", "--split", "0.1")
    assert result.returncode == 0, result.stderr
    train = [json.loads(line) for line in (tmp_path / "oci.jsonl").read_text().splitlines()]
    valid = [json.loads(line) for line in (tmp_path / "oci.valid.jsonl").read_text().splitlines()]
    assert len(train) == 18 and len(valid) == 2
    assert {r["prompt"] for r in train}.isdisjoint({r["prompt"] for r in valid})
    assert all(set(r) == {"prompt", "completion"} for r in train + valid)


def test_data_convert_refuses_unconvertible_with_line(tmp_path):
    src = tmp_path / "text.jsonl"
    src.write_text(json.dumps({"text": "raw"}) + "\n")
    result = run("data", "convert", str(src), str(tmp_path / "out.jsonl"), "--to", "alpaca")
    assert result.returncode == 1 and "line 1" in result.stderr and not (tmp_path / "out.jsonl").exists()


def test_data_preview_shows_trained_tokens(tmp_path, tiny_model_ready):
    src = tmp_path / "chat.jsonl"
    src.write_text(
        json.dumps({"messages": [{"role": "user", "content": "Ping?"}, {"role": "assistant", "content": "Pong!"}]}) + "\n"
    )
    result = run("data", "preview", str(src), "--model", "tuneserve/tiny-random", "-n", "1")
    assert result.returncode == 0, result.stderr
    assert "Pong!" in result.stdout and "Ping?" in result.stdout and "line 1" in result.stdout
