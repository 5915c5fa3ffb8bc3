"""Domain errors. Raised anywhere below api/, mapped once in app.py to OpenAI's error envelope:
{"error": {"message", "type", "param", "code"}}.

Every error a caller can cause is one of these, the lower layers' own included (models.ModelNotFound,
data.DataError, inference.ContextLengthExceeded subclass them), so one that no route expected is
still answered with its status and code, never as a 500. A route translates only to add context.
"""

from __future__ import annotations


class TuneserveError(Exception):
    status = 400
    type = "invalid_request_error"
    default_code: str | None = None
    default_param: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param or self.default_param
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


class InsufficientStorage(TuneserveError, OSError):
    """The disk (or quota) of the data dir is full. Still an OSError, so code that handles a failed
    write as an OSError keeps doing so; the API answers it as a 507 instead of a 500."""

    status = 507
    type = "server_error"
    default_code = "insufficient_storage"


class ServiceUnavailable(TuneserveError):
    """Something the server needs is down for now (the database restarting): try again shortly."""

    status = 503
    type = "server_error"
    default_code = "service_unavailable"
