"""Tool calls parsed back from generated text into OpenAI's `tool_calls` shape.

Models whose chat template supports tools (Qwen, Hermes, and SmolLM2 adapters trained by
tuneserve, which writes calls this way when a template cannot render them) answer a call as
    <tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>
Text outside the blocks stays the message content. A block that is not valid JSON is left in
the content as it is: better to show the model's words than to invent a call.
"""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

_BLOCK = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)


def parse_tool_calls(text: str) -> tuple[str | None, list[dict[str, Any]]]:
    """Split generated text into (content or None, tool_calls)."""
    calls: list[dict[str, Any]] = []
    kept: list[str] = []
    last = 0
    for match in _BLOCK.finditer(text):
        call = _as_call(match.group(1))
        if call is None:
            continue
        kept.append(text[last : match.start()])
        last = match.end()
        calls.append(call)
    kept.append(text[last:])
    content = "".join(kept).strip()
    return (content or None) if calls else text, calls


def _as_call(raw: str) -> dict[str, Any] | None:
    try:
        payload = json.loads(raw)
    except json.JSONDecodeError:
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("name"), str):
        return None
    arguments = payload.get("arguments", payload.get("parameters", {}))
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments, ensure_ascii=False)
    return {
        "id": f"call_{secrets.token_hex(12)}",
        "type": "function",
        "function": {"name": payload["name"], "arguments": arguments},
    }
