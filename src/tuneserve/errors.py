"""Domain errors. Raised anywhere below api/, mapped once in app.py to OpenAI's error envelope:
{"error": {"message", "type", "param", "code"}}.
"""

from __future__ import annotations


class TuneserveError(Exception):
    status = 400
    type = "invalid_request_error"
    default_code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code or self.default_code


class InvalidRequest(TuneserveError):
    status = 400


class NotFound(TuneserveError):
    status = 404
    default_code = "not_found"


class Forbidden(TuneserveError):
    status = 403
    default_code = "permission_denied"


class Unauthorized(TuneserveError):
    status = 401
    default_code = "invalid_api_key"


class PayloadTooLarge(TuneserveError):
    status = 413
    default_code = "file_too_large"


class UpstreamUnavailable(TuneserveError):
    """The upstream inference server (vLLM) cannot be reached."""

    status = 502
    type = "server_error"
    default_code = "upstream_unavailable"


class Conflict(TuneserveError):
    status = 409
    default_code = "conflict"
