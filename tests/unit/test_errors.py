"""One error family: the errors of the lower layers (models, data, inference) are domain errors, so
app.py maps each to OpenAI's envelope with its own status, code and param, even where no route
expected it; and a route that raises one unexpected still answers 4xx, never 500."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tuneserve.data.records import DataError
from tuneserve.errors import InvalidRequest, NotFound, TuneserveError
from tuneserve.inference.engine import ContextLengthExceeded
from tuneserve.models import ModelNotFound


@pytest.mark.parametrize(
    ("error", "kind", "status", "code", "param", "message"),
    [
        (ModelNotFound("model 'x' is nowhere"), NotFound, 404, "model_not_found", "model", "model 'x' is nowhere"),
        (DataError("no messages", line=3), InvalidRequest, 400, "invalid_training_file", None, "line 3: no messages"),
        (DataError("empty", code="empty_file", param="file"), InvalidRequest, 400, "empty_file", "file", "empty"),
        (
            ContextLengthExceeded("the prompt has 9000 tokens"),
            InvalidRequest,
            400,
            "context_length_exceeded",
            "messages",
            "the prompt has 9000 tokens",
        ),
    ],
)
def test_lower_layer_errors_are_domain_errors(error, kind, status, code, param, message):
    assert isinstance(error, kind) and isinstance(error, TuneserveError)
    assert (error.status, error.code, error.param, error.message, str(error)) == (status, code, param, message, message)


def test_the_old_bases_still_catch_them():
    """Callers that caught LookupError or ValueError keep working."""
    assert isinstance(ModelNotFound("x"), LookupError)
    assert isinstance(DataError("x"), ValueError) and isinstance(ContextLengthExceeded("x"), ValueError)


def test_an_unexpected_lower_layer_error_is_answered_in_the_envelope_not_500(tmp_path):
    from tuneserve.app import build_app
    from tuneserve.settings import Settings

    app: FastAPI = build_app(Settings(data_dir=tmp_path))

    @app.get("/raises/{which}")
    def raises(which: str):
        raise {
            "model": ModelNotFound("model 'gone' does not exist"),
            "data": DataError("bad record", line=7),
            "context": ContextLengthExceeded("too long"),
        }[which]

    with TestClient(app, raise_server_exceptions=False) as client:
        model, data, context = (client.get(f"/raises/{w}") for w in ("model", "data", "context"))
    assert model.status_code == 404 and model.json()["error"] == {
        "message": "model 'gone' does not exist",
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }
    assert data.status_code == 400 and data.json()["error"]["message"] == "line 7: bad record"
    assert data.json()["error"]["code"] == "invalid_training_file"
    assert context.status_code == 400 and context.json()["error"]["code"] == "context_length_exceeded"
