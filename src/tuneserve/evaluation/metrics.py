"""Scores of one answer against its reference, and their aggregate with a confidence interval.

Owns: ROUGE-1/2/L (Google's rouge-score: F-measure, Porter stemming, its default tokenizer,
which keeps only ASCII letters and digits, so text in other scripts scores 0), exact match, and
the aggregate. Does not own: the LLM judge (judge.py).

Confidence intervals are percentile bootstrap intervals: 95%, 1000 resamples of the items with a
fixed seed, so a report is reproducible. The same method serves every metric, the 0/1 ones (exact
match, judge YES) included; with one item the interval is the value itself.
"""

from __future__ import annotations

import re
import string
from functools import lru_cache

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
CI_LEVEL = 0.95
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
CI_METHOD = {"method": "percentile bootstrap", "level": CI_LEVEL, "resamples": BOOTSTRAP_RESAMPLES, "seed": BOOTSTRAP_SEED}

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


@lru_cache(maxsize=1)
def _scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)


def rouge(prediction: str, reference: str) -> dict[str, float]:
    """ROUGE-1, ROUGE-2 and ROUGE-L F-measures in [0, 1]."""
    scores = _scorer().score(reference, prediction)  # rouge-score takes (target, prediction)
    return {name: float(scores[name].fmeasure) for name in ROUGE_TYPES}


def normalize_answer(text: str) -> str:
    """SQuAD's normalization: lower case, no punctuation, no articles, single spaces."""
    text = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the normalized answers are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(reference))


def aggregate(values: list[float]) -> dict[str, float | None]:
    """{mean, ci_low, ci_high}: the mean and its bootstrap interval (all None for no values)."""
    if not values:
        return {"mean": None, "ci_low": None, "ci_high": None}
    import numpy as np  # here, not at module level: the server imports this module at start-up

    data = np.asarray(values, dtype=float)
    mean = float(data.mean())
    if len(data) == 1:
        return {"mean": mean, "ci_low": mean, "ci_high": mean}
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    means = data[rng.integers(0, len(data), size=(BOOTSTRAP_RESAMPLES, len(data)))].mean(axis=1)
    tail = (1 - CI_LEVEL) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return {"mean": mean, "ci_low": float(min(low, mean)), "ci_high": float(max(high, mean))}
