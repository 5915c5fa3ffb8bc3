"""Scores of one answer (ROUGE-1/2/L, exact match) and their aggregate with a bootstrap interval."""

from __future__ import annotations

import numpy as np
import pytest

from tuneserve.evaluation.metrics import aggregate, exact_match, normalize_answer, rouge


def test_rouge_of_identical_and_disjoint_answers():
    assert rouge("Paris is the capital of France.", "Paris is the capital of France.") == {
        "rouge1": 1.0,
        "rouge2": 1.0,
        "rougeL": 1.0,
    }
    assert rouge("Blue whales are large.", "Paris is the capital of France.") == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    assert rouge("", "Paris.") == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}


def test_rouge_by_hand():
    # reference: the cat sat on the mat (6 tokens); prediction: the cat sat (3 tokens)
    # ROUGE-1: P = 3/3, R = 3/6 -> F = 2/3. ROUGE-2: bigrams (the cat, cat sat): P = 2/2, R = 2/5 -> F = 4/7.
    # ROUGE-L: LCS = 3 -> same as ROUGE-1.
    scores = rouge("the cat sat", "the cat sat on the mat")
    assert scores["rouge1"] == pytest.approx(2 / 3)
    assert scores["rouge2"] == pytest.approx(4 / 7)
    assert scores["rougeL"] == pytest.approx(2 / 3)
    # ROUGE-L rewards order: the same words reversed share unigrams but a shorter subsequence.
    assert rouge("mat the on sat cat the", "the cat sat on the mat")["rougeL"] < 1.0
    # Porter stemming: cats -> cat, sitting and sits -> sit; 3 of 4 predicted tokens match all 3 reference ones.
    assert rouge("The cats are sitting", "the cat sits")["rouge1"] == pytest.approx(2 * (3 / 4) * 1 / (3 / 4 + 1))


@pytest.mark.parametrize(
    "prediction, reference, expected",
    [
        ("Paris", "paris", 1.0),
        ("The Eiffel Tower.", "eiffel   tower", 1.0),  # articles, punctuation, case and spaces do not count
        ("An apple!", "apple", 1.0),
        ("Paris, France", "Paris", 0.0),
        ("", "", 1.0),
    ],
)
def test_exact_match_normalizes_like_squad(prediction, reference, expected):
    assert exact_match(prediction, reference) == expected


def test_normalize_answer():
    assert normalize_answer("  The  Answer: is A, b! ") == "answer is b"


def test_aggregate_mean_and_interval():
    values = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0] * 5
    stats = aggregate(values)
    assert stats["mean"] == pytest.approx(0.5)
    assert stats["ci_low"] < 0.5 < stats["ci_high"]
    # The percentile bootstrap of a mean is close to the normal approximation for 30 values.
    se = np.std(values, ddof=1) / np.sqrt(len(values))
    assert stats["ci_high"] - stats["ci_low"] == pytest.approx(2 * 1.96 * se, rel=0.2)
    assert aggregate(values) == stats  # a fixed seed: the same report every time


def test_more_items_give_a_narrower_interval():
    rng = np.random.default_rng(1)
    small = aggregate(list(rng.integers(0, 2, 10).astype(float)))
    large = aggregate(list(rng.integers(0, 2, 400).astype(float)))
    assert (large["ci_high"] - large["ci_low"]) < (small["ci_high"] - small["ci_low"])


def test_degenerate_aggregates():
    assert aggregate([]) == {"mean": None, "ci_low": None, "ci_high": None}
    assert aggregate([0.7]) == {"mean": 0.7, "ci_low": 0.7, "ci_high": 0.7}
    assert aggregate([1.0] * 7) == {"mean": 1.0, "ci_low": 1.0, "ci_high": 1.0}
