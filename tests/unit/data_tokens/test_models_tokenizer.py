"""models.load_tokenizer, the one tokenizer loader: references and directories, its cache, and its
errors (an unknown hub id: tests/api/test_preview.py); and the adapters' use of it (an adapter's own tokenizer, or none)."""

from __future__ import annotations

import os

import pytest

from tuneserve.inference.adapters import adapter_tokenizer
from tuneserve.models import TINY_RANDOM, ModelNotFound, load_tokenizer, resolve_model


@pytest.fixture(scope="module")
def saved_tokenizer_dir(tmp_path_factory):
    """A directory with only a tokenizer in it, as training saves one beside an adapter."""
    out = tmp_path_factory.mktemp("adapter")
    load_tokenizer(TINY_RANDOM).save_pretrained(out)
    return out


def test_a_reference_is_resolved_through_the_model_cache_and_loaded_once():
    tokenizer = load_tokenizer(TINY_RANDOM)
    assert tokenizer is load_tokenizer(TINY_RANDOM)
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template  # SmolLM2's, from its GGUF
    assert load_tokenizer(resolve_model(TINY_RANDOM)) is load_tokenizer(str(resolve_model(TINY_RANDOM)))


def test_a_directory_is_read_as_it_is_and_again_when_rewritten(saved_tokenizer_dir):
    first = load_tokenizer(saved_tokenizer_dir)
    assert first is load_tokenizer(saved_tokenizer_dir)
    assert first("Hello there")["input_ids"] == load_tokenizer(TINY_RANDOM)("Hello there")["input_ids"]
    config = saved_tokenizer_dir / "tokenizer_config.json"
    stat = config.stat()
    os.utime(config, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the directory written again
    assert load_tokenizer(saved_tokenizer_dir) is not first


def test_a_directory_without_a_tokenizer_is_model_not_found(tmp_path):
    with pytest.raises(ModelNotFound, match="no tokenizer"):
        load_tokenizer(tmp_path)
    with pytest.raises(ModelNotFound):
        load_tokenizer(str(tmp_path / "missing"))


def test_an_adapter_uses_its_own_tokenizer_when_it_has_one(saved_tokenizer_dir, tmp_path):
    assert adapter_tokenizer(saved_tokenizer_dir) is load_tokenizer(saved_tokenizer_dir)
    assert adapter_tokenizer(tmp_path) is None  # no tokenizer beside it: the base model's serves it
