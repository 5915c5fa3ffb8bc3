"""Running an evaluation with a scripted endpoint (every model answers every item, scored and
judged; failures kept per answer; cancel; unreachable endpoint) and its report (JSON, HTML)."""

from __future__ import annotations

import json
import re
import threading

import openai
import pytest

from tests.unit.synthesis.conftest import ScriptedClient, connection_error, status_error
from tuneserve.evaluation.dataset import EvalItem
from tuneserve.evaluation.judge import Judge
from tuneserve.evaluation.report import build_report, failed_models, render_html, summarize, write_report
from tuneserve.evaluation.runner import Cancelled, EndpointUnreachable, run_evaluation

ITEMS = [
    EvalItem(i, i + 1, ({"role": "user", "content": q},), q, a)
    for i, (q, a) in enumerate(
        [
            ("Capital of Marnak?", "The capital of Marnak is Velspire."),
            ("Capital of Zorbia?", "The capital of Zorbia is Quillton."),
            ("Capital of Tessaly?", "The capital of Tessaly is Orvane."),
        ]
    )
]
CAPITALS = {"Marnak": "Velspire", "Zorbia": "Quillton", "Tessaly": "Orvane"}


def answer(request) -> str:
    country = next(c for c in CAPITALS if c in request["messages"][-1]["content"])
    if request["model"] == "tuned":
        return f"The capital of {country} is {CAPITALS[country]}."
    return "I am not sure, maybe Paris."


def test_every_model_answers_every_item_and_is_scored():
    client = ScriptedClient(answer)
    progress: list[tuple[int, int]] = []
    results = run_evaluation(
        ITEMS,
        ["base", "tuned"],
        client,
        max_tokens=32,
        temperature=0.0,
        concurrency=3,
        on_progress=lambda done, total: progress.append((done, total)),
    )
    assert len(client.calls) == 6 and {c["max_tokens"] for c in client.calls} == {32}
    assert [r["index"] for r in results] == [0, 1, 2] and results[1]["reference"] == ITEMS[1].reference
    tuned, base = results[0]["answers"]["tuned"], results[0]["answers"]["base"]
    assert tuned["text"] == "The capital of Marnak is Velspire." and tuned["exact_match"] == 1.0 and tuned["rougeL"] == 1.0
    assert base["exact_match"] == 0.0 and base["rouge1"] < 0.2 and base["error"] is None and base["judge"] is None
    assert progress[0] == (0, 6) and progress[-1] == (6, 6)

    summary = summarize(results, ["base", "tuned"], with_judge=False)
    assert summary["tuned"]["rougeL"] == {"mean": 1.0, "ci_low": 1.0, "ci_high": 1.0}
    assert summary["base"]["rougeL"]["mean"] < summary["tuned"]["rougeL"]["mean"]
    assert summary["base"]["n"] == 3 and summary["base"]["errors"] == 0 and "judge_yes" not in summary["base"]


def test_the_judge_gives_verdicts_and_unreadable_replies_are_counted():
    def judge_reply(request):
        user = request["messages"][-1]["content"]
        student = user.split("Student's answer: ")[1].split("\n")[0]
        if "Tessaly" in user and "Orvane" in student:
            return "The student is right, I suppose."  # no verdict
        return '{"Result": "YES", "Reason": "Same city."}' if "maybe Paris" not in student else "no. Wrong city."

    judge = Judge(ScriptedClient(judge_reply), "judge-model")
    results = run_evaluation(ITEMS, ["base", "tuned"], ScriptedClient(answer), judge=judge)
    assert results[0]["answers"]["tuned"]["judge"] == {"verdict": "YES", "reason": "Same city."}
    assert results[0]["answers"]["base"]["judge"] == {"verdict": "NO", "reason": "Wrong city."}
    assert results[2]["answers"]["tuned"]["judge"] is None
    assert "no YES/NO verdict" in results[2]["answers"]["tuned"]["judge_error"]
    assert all(c["model"] == "judge-model" and c["temperature"] == 0.0 for c in judge.client.calls)

    summary = summarize(results, ["base", "tuned"], with_judge=True)
    assert summary["tuned"]["judge_yes"]["mean"] == 1.0 and summary["tuned"]["judge_errors"] == 1
    assert summary["base"]["judge_yes"]["mean"] == 0.0 and summary["base"]["judge_errors"] == 0


def test_failed_requests_are_kept_per_answer_and_a_model_failing_everything_is_named():
    def respond(request):
        if request["model"] == "ghost":
            return status_error(openai.NotFoundError, 404, "The model 'ghost' does not exist")
        if "Zorbia" in request["messages"][-1]["content"]:
            return status_error(openai.BadRequestError, 400, "context too long")
        return answer(request)

    results = run_evaluation(ITEMS, ["tuned", "ghost"], ScriptedClient(respond))
    assert results[1]["answers"]["tuned"]["error"] == "400: context too long"
    assert results[1]["answers"]["tuned"]["text"] == "" and results[1]["answers"]["tuned"]["rouge1"] == 0.0
    report = build_report(results, ["tuned", "ghost"], dataset="d.jsonl", settings={"judge_model": None})
    assert report["summary"]["tuned"]["errors"] == 1 and report["summary"]["ghost"]["errors"] == 3
    assert failed_models(report) == ["ghost"]
    assert results[0]["answers"]["ghost"]["error"] == "404: The model 'ghost' does not exist"


def test_an_unreachable_endpoint_stops_the_run():
    client = ScriptedClient(lambda request: connection_error())
    with pytest.raises(EndpointUnreachable, match="cannot reach the endpoint"):
        run_evaluation(ITEMS * 5, ["base"], client, concurrency=1)
    assert len(client.calls) == 1


def test_cancel_stops_before_the_remaining_answers():
    asked = threading.Event()

    def respond(request):
        asked.set()
        return answer(request)

    client = ScriptedClient(respond)
    with pytest.raises(Cancelled):
        run_evaluation(ITEMS * 10, ["base"], client, concurrency=1, should_stop=asked.is_set)
    assert len(client.calls) == 1


def test_report_json_and_a_self_contained_html(tmp_path):
    items = [EvalItem(0, 1, ({"role": "user", "content": "<b>bold</b>?"},), "<b>bold</b>?", "Use <script>alert(1)</script>")]
    client = ScriptedClient(lambda request: "An answer with <img src=x onerror=alert(1)> & more")
    judge = Judge(ScriptedClient(lambda request: "YES. It is <fine>."), "j")
    results = run_evaluation(items, ["base", "ft:tiny:default:x:abc"], client, judge=judge)
    report = build_report(
        results, ["base", "ft:tiny:default:x:abc"], dataset="eval.jsonl", settings={"max_tokens": 16, "judge_model": "j"}
    )
    json_path, html_path = write_report(report, tmp_path / "out")

    data = json.loads(json_path.read_text())
    assert data["models"] == ["base", "ft:tiny:default:x:abc"] and data["n_items"] == 1
    assert data["confidence_interval"]["method"] == "percentile bootstrap" and data["confidence_interval"]["level"] == 0.95
    assert set(data["summary"]["base"]) >= {"n", "rouge1", "rouge2", "rougeL", "exact_match", "judge_yes"}
    assert data["items"][0]["answers"]["base"]["judge"]["verdict"] == "YES"

    html = html_path.read_text()
    assert html == render_html(data)
    assert "<svg" in html and html.count("<rect") == 2 * 5  # 2 models x 5 metrics (judge included)
    assert "ft:tiny:default:x:abc" in html and "Judge YES" in html
    # Nothing runs, nothing is fetched: user text is escaped and no URL is referenced.
    assert "<script" not in html and "<img" not in html and "&lt;script&gt;" in html and "&lt;img src=x" in html
    assert not re.search(r"""<[^>]*\s(src|href)\s*=|@import|url\(""", html)
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", html)
