"""A scripted stand-in for the `openai` client (unit tests of the pipeline's logic only; the real
client against a real server is in tests/e2e/test_eval_synth.py)."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any, Callable

import httpx
import openai


def completion(text: str) -> SimpleNamespace:
    return SimpleNamespace(choices=[SimpleNamespace(message=SimpleNamespace(content=text))])


class ScriptedClient:
    """client.chat.completions.create(**request) -> respond(request) (a str, or an exception to raise)."""

    def __init__(self, respond: Callable[[dict[str, Any]], Any]):
        self.respond = respond
        self.calls: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.chat = SimpleNamespace(completions=SimpleNamespace(create=self._create))

    def _create(self, **request: Any) -> SimpleNamespace:
        with self._lock:
            self.calls.append(request)
        reply = self.respond(request)
        if isinstance(reply, Exception):
            raise reply
        return completion(reply)


def status_error(cls: type[openai.APIStatusError], status: int, message: str) -> openai.APIStatusError:
    request = httpx.Request("POST", "http://127.0.0.1:9/v1/chat/completions")
    body = {"message": message, "type": "invalid_request_error", "param": None, "code": None}
    return cls(message, response=httpx.Response(status, request=request), body=body)


def connection_error() -> openai.APIConnectionError:
    return openai.APIConnectionError(request=httpx.Request("POST", "http://127.0.0.1:9/v1/chat/completions"))
