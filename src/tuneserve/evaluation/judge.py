"""The LLM judge: does a model's answer agree with the reference? YES or NO, with a reason.

Owns: the judge prompt and reading its verdict (through llm/replies.parse_verdict). The judge
is any OpenAI-compatible endpoint and model, tuneserve's own included. Its prompt follows the
llama-recipes chatbot seed's: a question, a teacher (reference) answer, a student answer; the
verdict is read from JSON ({"Result": "YES", "Reason": ...}) as well as from plain text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tuneserve.llm.replies import parse_verdict

JUDGE_SYSTEM_PROMPT = (
    "You grade a student's answer to a question against the teacher's answer. "
    "Reply with YES or NO first, then one short sentence saying why."
)
# The instruction is repeated last: small judges follow what they read last.
JUDGE_USER_TEMPLATE = (
    "Question: {question}\nTeacher's answer: {reference}\nStudent's answer: {answer}\n\n"
    "Is the student's answer correct according to the teacher's answer? Reply YES or NO, then why."
)
JUDGE_MAX_TOKENS = 64  # a verdict and one sentence


@dataclass(frozen=True)
class Judge:
    client: Any  # an openai.OpenAI
    model: str
    max_tokens: int = JUDGE_MAX_TOKENS

    def verdict(self, question: str, reference: str, answer: str) -> dict[str, Any]:
        """{"verdict": "YES" | "NO" | None, "reason", "raw"}; None when the reply says neither.

        Request errors propagate (openai.APIError): the runner records them per item.
        """
        response = self.client.chat.completions.create(
            model=self.model,
            temperature=0.0,
            max_tokens=self.max_tokens,
            messages=[
                {"role": "system", "content": JUDGE_SYSTEM_PROMPT},
                {
                    "role": "user",
                    "content": JUDGE_USER_TEMPLATE.format(question=question, reference=reference, answer=answer or "(no answer)"),
                },
            ],
        )
        raw = (response.choices[0].message.content or "") if response.choices else ""
        verdict, reason = parse_verdict(raw)
        return {"verdict": verdict, "reason": reason, "raw": raw}
