"""/v1/files: upload, list, retrieve, delete, content (OpenAI's Files API), and preview (a tuneserve extension)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse

from tuneserve.api.deps import Project
from tuneserve.api.schemas import file_object, list_object
from tuneserve.data import DataError
from tuneserve.errors import InvalidRequest
from tuneserve.models import check_model

router = APIRouter(prefix="/v1/files", tags=["files"])


@router.post("")
def upload_file(request: Request, project: Project, file: UploadFile, purpose: str = Form()):
    """Upload a file. For purpose `fine-tune` the data is checked first; a bad line is a 400 naming it."""
    # The name is kept as metadata only; bytes are stored under the new file id.
    filename = (file.filename or "upload").replace("\\", "/").rsplit("/", 1)[-1][:255] or "upload"
    row = request.app.state.files.create(project, filename, purpose, file.file)
    return file_object(row)


@router.get("")
def list_files(
    request: Request,
    project: Project,
    purpose: str | None = None,
    limit: int = Query(10000, ge=1, le=10000),
    order: Literal["asc", "desc"] = "desc",
    after: str | None = None,
):
    """List files, newest first."""
    rows, has_more = request.app.state.files.list(project, purpose=purpose, limit=limit, after=after, order=order)
    return list_object([file_object(r) for r in rows], has_more, with_ids=True)


@router.get("/{file_id}")
def retrieve_file(request: Request, project: Project, file_id: str):
    """One file's object."""
    return file_object(request.app.state.files.get(project, file_id))


@router.delete("/{file_id}")
def delete_file(request: Request, project: Project, file_id: str):
    """Delete a file; jobs already created keep their copy of its path."""
    request.app.state.files.delete(project, file_id)
    return {"id": file_id, "object": "file", "deleted": True}


@router.get("/{file_id}/content")
def file_content(request: Request, project: Project, file_id: str):
    """The file's bytes, as uploaded."""
    row, path = request.app.state.files.content_path(project, file_id)
    if not path.exists():
        raise InvalidRequest(f"the content of {file_id} is no longer stored", param="file_id", code="file_content_missing")
    media = "text/csv" if row.filename.endswith(".csv") else "application/octet-stream"
    return FileResponse(path, media_type=media, filename=row.filename)


@router.get("/{file_id}/preview")
def preview_file(
    request: Request,
    project: Project,
    file_id: str,
    model: str = Query(description="the base model whose tokenizer and chat template render the examples"),
    n: int = Query(3, ge=1, le=20, description="how many examples, from the start of the file"),
    max_seq_length: int = Query(1024, ge=1, le=131072, description="tokens kept per example, as in training"),
):
    """The first `n` examples as `model` sees them, with the trained tokens marked.

    A tuneserve extension (OpenAI has no such route), for the web console; the same as
    `tuneserve data preview FILE --model M -n N`. Each item: {"line", "n_tokens", "n_trained",
    "truncated", "n_tokens_full", "segments": [{"text", "trained"}]}, the segments being the
    rendered text (special tokens kept) cut where training switches between context and trained tokens.
    """
    _row, path = request.app.state.files.content_path(project, file_id)
    if not path.exists():
        raise InvalidRequest(f"the content of {file_id} is no longer stored", param="file_id", code="file_content_missing")
    model = check_model(model)  # ModelNotFound is a 404 on param "model"
    from tuneserve.data.preview import preview_examples  # imports transformers: only when asked

    try:
        previews = preview_examples(path, model, n, max_seq_length=max_seq_length)
    except DataError as exc:
        raise InvalidRequest(f"{file_id} cannot be previewed: {exc}", param="file_id", code=exc.code) from None
    return {"object": "list", "data": previews, "model": model}
