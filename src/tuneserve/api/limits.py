"""Request body limits, as a pure ASGI middleware: every body is refused past its limit with a 413 in OpenAI's
error envelope. An upload (POST /v1/files, or the PUT of Together's upload) has --max-upload-bytes plus the
multipart framing; any other body (JSON) has --max-request-bytes.

A body with a Content-Length over the limit is refused before a byte of it is read. A body sent without one
(chunked) is counted as the app reads it: past the limit the read fails, and whatever the app would answer to
that (FastAPI turns a failed read into a 400) is replaced by the 413. A body within its Content-Length needs
no counting: the HTTP server never hands the app more than the length announced.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tuneserve.api.responses import ErrorResponse, error_body

UPLOAD_PATH = "/v1/files"
TOGETHER_UPLOAD_PREFIX = "/together-uploads/"  # api/together_files.py: the PUT of the bytes
MULTIPART_ALLOWANCE = 64 * 1024  # the form's boundaries, headers and the purpose field around the file's bytes

# OpenAPI: the 413 any route can answer (the upload route documents its own, for the file).
TOO_LARGE_RESPONSE: dict[int | str, dict[str, Any]] = {
    413: {
        "model": ErrorResponse,
        "description": "The request body is larger than the server's limit (--max-request-bytes; uploads: --max-upload-bytes)",
    }
}


class BodyTooLarge(Exception):
    """Raised to the app from `receive` when a body without Content-Length runs past its limit."""


class BodyLimit:
    def __init__(self, app: ASGIApp, *, max_request_bytes: int, max_upload_bytes: int) -> None:
        self.app = app
        self.max_request_bytes = max_request_bytes
        self.max_upload_bytes = max_upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        upload = (scope["method"] == "POST" and scope["path"].rstrip("/") == UPLOAD_PATH) or (
            scope["method"] == "PUT" and scope["path"].startswith(TOGETHER_UPLOAD_PREFIX)  # Together's upload: raw bytes
        )
        limit = self.max_upload_bytes + MULTIPART_ALLOWANCE if upload else self.max_request_bytes
        length = _content_length(scope)
        if length is not None:
            if length > limit:
                await _refuse(send, self._too_large(upload))
            else:
                await self.app(scope, receive, send)
            return
        await self._counted(scope, receive, send, limit, upload)

    async def _counted(self, scope: Scope, receive: Receive, send: Send, limit: int, upload: bool) -> None:
        received = 0
        exceeded = started = False

        async def counting_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded and not started:
                return  # the app's answer to the failed read: the 413 below is sent instead
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not exceeded or started:
                raise
        if exceeded and not started:
            await _refuse(send, self._too_large(upload))

    def _too_large(self, upload: bool) -> dict:
        if upload:
            message = f"the upload is larger than the limit of {self.max_upload_bytes} bytes"
            return error_body(message, param="file", code="file_too_large")
        message = f"the request body is larger than the limit of {self.max_request_bytes} bytes"
        return error_body(message, param=None, code="request_too_large")


def _content_length(scope: Scope) -> int | None:
    """The announced length; None when there is none (chunked) or it is not a number (the HTTP server refuses those)."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


async def _refuse(send: Send, body: dict) -> None:
    content = json.dumps(body).encode()
    # Connection: close: the unread rest of the body would otherwise be taken for the next request.
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode()), (b"connection", b"close")]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": content})
