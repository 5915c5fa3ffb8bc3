"""The OpenAPI document tells the truth about the answers: each JSON route names its response schema,
each error status it can answer is documented as OpenAI's error envelope, and none claims FastAPI's
422 (validation errors are answered 400). A fuzzer checks responses against this document."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tuneserve.app import build_app
from tuneserve.settings import Settings

# (method, path) -> fields the documented 200 JSON object has (for a list, those of its items).
MAIN_ROUTES = {
    ("post", "/v1/files"): {"id", "object", "bytes", "filename", "purpose", "status", "validation"},
    ("get", "/v1/files"): {"id", "object", "bytes", "filename"},
    ("get", "/v1/files/{file_id}"): {"id", "object", "bytes", "filename"},
    ("delete", "/v1/files/{file_id}"): {"id", "object", "deleted"},
    ("post", "/v1/fine_tuning/jobs"): {"id", "object", "status", "hyperparameters", "fine_tuned_model", "training_type"},
    ("get", "/v1/fine_tuning/jobs"): {"id", "object", "status", "hyperparameters"},
    ("get", "/v1/fine_tuning/jobs/{job_id}"): {"id", "object", "status", "error", "method"},
    ("post", "/v1/fine_tuning/jobs/{job_id}/cancel"): {"id", "object", "status"},
    ("get", "/v1/fine_tuning/jobs/{job_id}/events"): {"id", "object", "level", "message", "type", "data"},
    ("get", "/v1/fine_tuning/jobs/{job_id}/checkpoints"): {
        "id",
        "object",
        "fine_tuned_model_checkpoint",
        "step_number",
        "metrics",
    },
    ("post", "/v1/finetune/list_checkpoints"): {"id", "object", "fine_tuning_job_id", "step_number"},
    ("get", "/v1/models"): {"id", "object", "created", "owned_by", "root", "parent"},
    ("delete", "/v1/models/{model}"): {"id", "object", "deleted"},
    ("post", "/v1/chat/completions"): {"id", "object", "created", "model", "choices", "usage"},
    ("post", "/v1/completions"): {"id", "object", "created", "model", "choices", "usage"},
    ("get", "/v1/evaluations/{evaluation_id}"): {"id", "object", "status", "progress", "summary"},
}


@pytest.fixture(scope="module")
def openapi(tmp_path_factory) -> dict:
    app = build_app(Settings(data_dir=tmp_path_factory.mktemp("openapi")))
    response = TestClient(app).get("/openapi.json")
    assert response.status_code == 200
    return response.json()


def resolve(doc: dict, schema: dict) -> dict:
    while "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def object_fields(doc: dict, schema: dict) -> set[str]:
    """The properties of the object `schema` describes; for a list (bare, or a page's `data`), of its items."""
    schema = resolve(doc, schema)
    if schema.get("type") == "array":
        return object_fields(doc, schema["items"])
    properties = schema.get("properties", {})
    if properties.get("object", {}).get("const") == "list":
        return object_fields(doc, properties["data"])
    if "anyOf" in schema:  # one model card or another: the fields all of them have
        return set.intersection(*(object_fields(doc, s) for s in schema["anyOf"]))
    return set(properties)


@pytest.mark.parametrize(("method", "path"), sorted(MAIN_ROUTES))
def test_the_main_routes_declare_their_response_schema(openapi, method, path):
    ok = openapi["paths"][path][method]["responses"]["200"]
    schema = ok["content"]["application/json"]["schema"]
    assert MAIN_ROUTES[(method, path)] <= object_fields(openapi, schema)


def test_documented_fields_that_are_always_sent_are_required(openapi):
    job = resolve(openapi, {"$ref": "#/components/schemas/FineTuningJob"})
    assert {"id", "object", "error", "estimated_finish", "integrations", "training_type"} <= set(job["required"])
    message = resolve(openapi, {"$ref": "#/components/schemas/AssistantMessage"})
    assert "tool_calls" in message["properties"] and "tool_calls" not in message["required"]  # sent only with calls
    assert "refusal" in message["required"]


def test_every_error_status_is_the_error_envelope_and_none_is_422(openapi):
    envelope = resolve(openapi, {"$ref": "#/components/schemas/ErrorResponse"})
    assert set(resolve(openapi, envelope["properties"]["error"])["properties"]) == {"message", "type", "param", "code"}
    documented_errors = 0
    for path, operations in openapi["paths"].items():
        for method, operation in operations.items():
            assert "422" not in operation["responses"], f"{method} {path}"
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")):
                    documented_errors += 1
                    assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}, (
                        f"{method} {path} {status}"
                    )
    assert documented_errors > 50
    assert "HTTPValidationError" not in openapi["components"]["schemas"]


def test_routes_behind_a_key_document_401_and_lookups_404(openapi):
    for path, operations in openapi["paths"].items():
        for method, operation in operations.items():
            if path.startswith("/v1/") and path != "/v1/health_check":
                assert "401" in operation["responses"], f"{method} {path}"
            if "{" in path:
                assert "404" in operation["responses"], f"{method} {path}"
    assert set(openapi["paths"]["/v1/files"]["post"]["responses"]) >= {"200", "400", "401", "413", "507"}
    assert "403" in openapi["paths"]["/v1/models/{model}"]["delete"]["responses"]


def test_streams_and_files_document_their_media_types(openapi):
    chat = openapi["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]["content"]
    assert set(chat) == {"application/json", "text/event-stream"}
    download = openapi["paths"]["/v1/fine_tuning/jobs/{job_id}/download"]["get"]["responses"]["200"]["content"]
    assert set(download) == {"application/gzip"}
    loaded = openapi["paths"]["/v1/load_lora_adapter"]["post"]["responses"]
    assert set(loaded["200"]["content"]) == {"text/plain"} and set(loaded["400"]["content"]) == {"application/json"}
