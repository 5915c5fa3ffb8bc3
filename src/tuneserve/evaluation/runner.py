"""Running an evaluation: every model answers every item, each answer is scored (and judged).

Owns: the requests (concurrent, through any OpenAI-compatible `openai` client), per-answer scores,
progress and cancellation. Used the same way by `tuneserve eval` and by the server's evaluation
worker. Does not own: the dataset (dataset.py), the metrics (metrics.py), the report (report.py).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any, Callable

from tuneserve.evaluation.dataset import EvalItem
from tuneserve.evaluation.judge import Judge
from tuneserve.evaluation.metrics import exact_match, rouge


class Cancelled(Exception):
    """should_stop() said so; the answers so far are dropped."""


class EndpointUnreachable(Exception):
    """The endpoint cannot be reached at all (after the client's retries): nothing to score."""


def run_evaluation(
    items: list[EvalItem],
    models: list[str],
    client: Any,
    *,
    judge: Judge | None = None,
    max_tokens: int = 256,
    temperature: float = 0.0,
    concurrency: int = 4,
    on_progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[dict[str, Any]]:
    """One result per item: {index, question, reference, answers: {MODEL: answer}}, in item order.

    An answer: {text, rouge1, rouge2, rougeL, exact_match, judge: {verdict, reason} | None,
    error, judge_error}. A failed request is kept as an answer with `error` set and empty text
    (it scores 0): a model that fails on some items is worse on them. Raises Cancelled, or
    EndpointUnreachable when a connection cannot be made.
    """
    import openai

    units = [(item, model) for item in items for model in models]
    answers: dict[tuple[int, str], dict[str, Any]] = {}
    stop = threading.Event()
    unreachable: list[Exception] = []
    progress = on_progress or (lambda done, total: None)

    def work(item: EvalItem, model: str) -> None:
        if stop.is_set() or (should_stop is not None and should_stop()):
            stop.set()
            return
        try:
            answers[(item.index, model)] = _answer(client, judge, item, model, max_tokens, temperature)
        except openai.APIConnectionError as exc:
            unreachable.append(exc)
            stop.set()

    progress(0, len(units))
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        futures = [pool.submit(work, item, model) for item, model in units]
        for future in as_completed(futures):
            future.result()
            if not stop.is_set():
                progress(len(answers), len(units))
    if unreachable:
        raise EndpointUnreachable(f"cannot reach the endpoint: {unreachable[0]}")
    if stop.is_set():
        raise Cancelled()
    return [
        {
            "index": item.index,
            "question": item.question,
            "reference": item.reference,
            "answers": {model: answers[(item.index, model)] for model in models},
        }
        for item in items
    ]


def _answer(client: Any, judge: Judge | None, item: EvalItem, model: str, max_tokens: int, temperature: float) -> dict[str, Any]:
    import openai

    text, error = "", None
    try:
        response = client.chat.completions.create(
            model=model, messages=list(item.messages), max_tokens=max_tokens, temperature=temperature
        )
        text = (response.choices[0].message.content or "") if response.choices else ""
    except openai.APIConnectionError:
        raise
    except openai.APIError as exc:
        error = describe_error(exc)
    answer: dict[str, Any] = {
        "text": text,
        **rouge(text, item.reference),
        "exact_match": exact_match(text, item.reference),
        "judge": None,
        "error": error,
        "judge_error": None,
    }
    if judge is not None and error is None:
        try:
            verdict = judge.verdict(item.question, item.reference, text)
        except openai.APIConnectionError:
            raise
        except openai.APIError as exc:
            answer["judge_error"] = describe_error(exc)
        else:
            if verdict["verdict"] is None:
                answer["judge_error"] = f"the judge's reply has no YES/NO verdict: {verdict['raw'][:300]!r}"
            else:
                answer["judge"] = {"verdict": verdict["verdict"], "reason": verdict["reason"]}
    return answer


def describe_error(exc: Exception) -> str:
    """The endpoint's own error message (OpenAI's envelope), with the status."""
    body = getattr(exc, "body", None)
    message = (body.get("message") if isinstance(body, dict) else None) or str(exc)
    status = getattr(exc, "status_code", None)
    return f"{status}: {message}" if status else message
