"""How "auto" hyperparameters become numbers, and spec files as users write them."""

from __future__ import annotations

import json

import pytest
import yaml
from pydantic import ValidationError

from tuneserve.data import count_examples
from tuneserve.training.spec import (
    BASE_LEARNING_RATE,
    MAX_BATCH_SIZE,
    MAX_EPOCHS,
    Hyperparameters,
    TrainingSpec,
    auto_batch_size,
    auto_n_epochs,
    load_spec_file,
    resolve_hyperparameters,
)

BASE_LR = BASE_LEARNING_RATE[("supervised", "lora")]
SIZES = [0, 1, 10, 91, 133, 400, 999, 5_000, 8_333, 8_334, 12_500, 100_000, 10_000_000]


# -- auto values ---------------------------------------------------------------------------


@pytest.mark.parametrize("n", SIZES)
def test_auto_values_are_valid_hyperparameters(n):
    epochs, batch = auto_n_epochs(n), auto_batch_size(n)
    assert isinstance(epochs, int) and 1 <= epochs <= MAX_EPOCHS
    assert isinstance(batch, int) and 4 <= batch <= 32 <= MAX_BATCH_SIZE
    Hyperparameters(n_epochs=epochs, batch_size=batch, learning_rate_multiplier=1.0, learning_rate=BASE_LR)


def test_auto_n_epochs_heuristic():
    assert auto_n_epochs(91) == 5  # the identity set: documented
    assert auto_n_epochs(999) == 3  # the OpenAI default for mid-size sets
    assert auto_n_epochs(0) == 1
    # small sets see at least ~400 examples (up to the cap), big sets at most ~25k
    for n in (1, 10, 50, 91, 133, 200, 399):
        assert n * auto_n_epochs(n) >= 400 or auto_n_epochs(n) == 25
    for n in (8_334, 12_500, 100_000, 10_000_000):
        assert n * auto_n_epochs(n) <= 25_000 or auto_n_epochs(n) == 1
        assert auto_n_epochs(n) < 3
    # never more epochs for more data
    values = [auto_n_epochs(n) for n in SIZES[1:]]
    assert values == sorted(values, reverse=True)


def test_auto_batch_size_heuristic():
    assert auto_batch_size(0) == auto_batch_size(91) == 4  # floor
    assert auto_batch_size(5_000) == 10  # ~0.2% of the data
    assert auto_batch_size(10_000_000) == 32  # cap
    values = [auto_batch_size(n) for n in SIZES]
    assert values == sorted(values)


# -- resolve_hyperparameters -----------------------------------------------------------------


@pytest.mark.parametrize(
    "requested",
    [
        None,
        {},
        {"n_epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": "auto"},
        {"n_epochs": None, "batch_size": None, "learning_rate_multiplier": None},
    ],
)
def test_auto_resolves_to_concrete_numbers(requested):
    hp = resolve_hyperparameters(requested, 91)
    assert hp == Hyperparameters(
        n_epochs=auto_n_epochs(91), batch_size=auto_batch_size(91), learning_rate_multiplier=1.0, learning_rate=BASE_LR
    )
    assert hp.beta is None  # supervised: no DPO beta
    assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in hp.model_dump(exclude_none=True).values())


def test_multiplier_scales_the_base_rate():
    for multiplier in (0.1, 0.5, 2, 10):
        hp = resolve_hyperparameters({"learning_rate_multiplier": multiplier}, 91)
        assert hp.learning_rate_multiplier == multiplier
        assert hp.learning_rate == pytest.approx(BASE_LR * multiplier)


def test_explicit_numbers_win():
    hp = resolve_hyperparameters({"n_epochs": 2, "batch_size": 16, "learning_rate_multiplier": 3, "learning_rate": 5e-5}, 91)
    assert (hp.n_epochs, hp.batch_size, hp.learning_rate_multiplier, hp.learning_rate) == (2, 16, 3.0, 5e-5)
    assert hp.n_epochs != auto_n_epochs(91) and hp.batch_size != auto_batch_size(91)


@pytest.mark.parametrize(
    "requested, field",
    [
        ({"n_epochs": 0}, "n_epochs"),
        ({"n_epochs": MAX_EPOCHS + 1}, "n_epochs"),
        ({"n_epochs": 1.5}, "n_epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": MAX_BATCH_SIZE + 1}, "batch_size"),
        ({"learning_rate_multiplier": 0}, "learning_rate_multiplier"),
        ({"learning_rate_multiplier": 101}, "learning_rate_multiplier"),
        ({"learning_rate": -1e-4}, "learning_rate"),
    ],
)
def test_out_of_range_raises_validation_error(requested, field):
    with pytest.raises(ValidationError) as info:
        resolve_hyperparameters(requested, 91)
    assert info.value.errors()[0]["loc"] == (field,)


def test_range_limits_themselves_are_allowed():
    hp = resolve_hyperparameters({"n_epochs": MAX_EPOCHS, "batch_size": MAX_BATCH_SIZE, "learning_rate_multiplier": 100}, 91)
    assert (hp.n_epochs, hp.batch_size) == (MAX_EPOCHS, MAX_BATCH_SIZE)


def test_hyperparameters_are_frozen():
    hp = resolve_hyperparameters({}, 91)
    with pytest.raises(ValidationError):
        hp.n_epochs = 9


# -- load_spec_file -------------------------------------------------------------------------


def _chat(n):
    return "".join(
        json.dumps({"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}) + "\n"
        for i in range(n)
    )


@pytest.fixture
def project(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text(_chat(91))
    (tmp_path / "data" / "valid.jsonl").write_text(_chat(5))
    (tmp_path / "specs").mkdir()
    return tmp_path


def _counting(calls):
    def count(path):
        calls.append(path)
        return count_examples(path)

    return count


def test_yaml_spec_with_relative_paths_and_auto(project):
    spec_path = project / "specs" / "run.yaml"
    spec_path.write_text(
        yaml.safe_dump(
            {
                "model": "tuneserve/tiny-random",
                "training_file": "../data/train.jsonl",
                "validation_file": "../data/valid.jsonl",
                "hyperparameters": {"n_epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": 2},
                "lora": {"r": 8, "alpha": 16},
                "seed": 7,
            }
        )
    )
    calls = []
    spec = load_spec_file(spec_path, _counting(calls))

    assert isinstance(spec, TrainingSpec)
    assert spec.training_file == str((project / "data" / "train.jsonl").resolve())
    assert spec.validation_file == str((project / "data" / "valid.jsonl").resolve())
    assert calls == [spec.training_file]  # examples are counted in the training file
    assert spec.hyperparameters == resolve_hyperparameters({"learning_rate_multiplier": 2}, 91)
    assert spec.hyperparameters.n_epochs == auto_n_epochs(91)
    assert spec.hyperparameters.learning_rate == pytest.approx(2 * BASE_LR)
    assert (spec.lora.r, spec.lora.alpha, spec.seed, spec.method) == (8, 16, 7, "supervised")


def test_json_spec_with_method_form(project):
    spec_path = project / "specs" / "run.json"
    spec_path.write_text(
        json.dumps(
            {
                "model": "tuneserve/tiny-random",
                "training_file": "../data/train.jsonl",
                "hyperparameters": {"n_epochs": 9, "batch_size": 2},
                "method": {
                    "type": "supervised",
                    "supervised": {"hyperparameters": {"n_epochs": 4, "learning_rate_multiplier": "auto"}},
                },
            }
        )
    )
    spec = load_spec_file(spec_path, count_examples)
    assert spec.method == "supervised"
    assert spec.training_file == str((project / "data" / "train.jsonl").resolve())
    # the method form wins over the top-level form; "auto" resolves
    assert (spec.hyperparameters.n_epochs, spec.hyperparameters.batch_size) == (4, 2)
    assert spec.hyperparameters.learning_rate == pytest.approx(BASE_LR)


def test_absolute_training_path_is_kept(project, tmp_path):
    absolute = project / "data" / "train.jsonl"
    spec_path = project / "specs" / "abs.yml"
    spec_path.write_text(f"model: tuneserve/tiny-random\ntraining_file: {absolute}\n")
    spec = load_spec_file(spec_path, lambda p: 91)
    assert spec.training_file == str(absolute)
    assert spec.hyperparameters == resolve_hyperparameters({}, 91)


def test_spec_round_trips_through_the_job_dir(project):
    spec_path = project / "specs" / "run.yaml"
    spec_path.write_text("model: tuneserve/tiny-random\ntraining_file: ../data/train.jsonl\n")
    spec = load_spec_file(spec_path, count_examples)
    written = spec.write(project / "job")
    assert written == project / "job" / "spec.json"
    assert TrainingSpec.read(project / "job") == spec
    assert not list((project / "job").glob("*.tmp"))


@pytest.mark.parametrize(
    "text, match",
    [
        ("- just\n- a list\n", "mapping"),
        ("model: m\n", "training_file"),
    ],
)
def test_bad_spec_files(project, text, match):
    spec_path = project / "specs" / "bad.yaml"
    spec_path.write_text(text)
    with pytest.raises(ValueError, match=match):
        load_spec_file(spec_path, count_examples)


def test_unknown_spec_keys_are_rejected(project):
    spec_path = project / "specs" / "typo.yaml"
    spec_path.write_text("model: tuneserve/tiny-random\ntraining_file: ../data/train.jsonl\nn_epoch: 3\n")
    with pytest.raises(ValidationError) as info:
        load_spec_file(spec_path, count_examples)
    assert info.value.errors()[0]["loc"] == ("n_epoch",)


def test_the_api_accepts_exactly_the_limits_the_training_spec_has():
    """One set of limits: a request's hyperparameters are refused where the training spec would refuse them."""
    from pydantic import ValidationError

    from tuneserve.jobs.requests import RequestedHyperparameters
    from tuneserve.training.spec import MAX_BATCH_SIZE, MAX_DPO_BETA, MAX_EPOCHS, MAX_LR_MULTIPLIER

    limits = {
        "n_epochs": MAX_EPOCHS,
        "batch_size": MAX_BATCH_SIZE,
        "learning_rate_multiplier": MAX_LR_MULTIPLIER,
        "beta": MAX_DPO_BETA,
    }
    for name, limit in limits.items():
        assert getattr(RequestedHyperparameters(**{name: limit}), name) == limit
        with pytest.raises(ValidationError):
            RequestedHyperparameters(**{name: limit + 1})
    Hyperparameters(
        n_epochs=MAX_EPOCHS,
        batch_size=MAX_BATCH_SIZE,
        learning_rate_multiplier=MAX_LR_MULTIPLIER,
        learning_rate=1e-4,
        beta=MAX_DPO_BETA,
    )
