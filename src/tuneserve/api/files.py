"""/v1/files: upload, list, retrieve, delete, content (OpenAI's Files API), and preview (a tuneserve extension)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse

from tuneserve.api.deps import Files, Project
from tuneserve.api.responses import FileDeleted, FileList, FileObject, FilePreview, error_responses
from tuneserve.api.together_files import UPLOAD_REDIRECT, start_upload
from tuneserve.data import DataError
from tuneserve.errors import InvalidRequest
from tuneserve.models import check_model
from tuneserve.store.files import PURPOSES

router = APIRouter(prefix="/v1/files", tags=["files"])

_BYTES = {"schema": {"type": "string", "format": "binary"}}


@router.post("", response_model=FileObject, responses={**UPLOAD_REDIRECT, **error_responses(400, 401, 413, 507)})
def upload_file(
    request: Request,
    files: Files,
    project: Project,
    purpose: Literal[PURPOSES] = Form(),
    file: UploadFile | None = None,
    file_name: str | None = Form(None, description="Together's SDK: the name of a file whose bytes follow (a 302)"),
):
    """Upload a file. For purpose `fine-tune` the data is checked first; a bad line is a 400 naming it.

    A form with `file_name` and no `file` is the first step of Together's upload (api/together_files.py)."""
    if file is not None and file_name is not None:
        raise InvalidRequest("give either file (the bytes) or file_name (Together's upload), not both", param="file_name")
    if file is None:
        if file_name:
            return start_upload(request, files, project, purpose, file_name)
        raise InvalidRequest("Invalid value for 'file': Field required", param="file", code="invalid_value")
    # The name is kept as metadata only; bytes are stored under the new file id. Its last part, printable characters
    # only: a NUL or a control character is no name (PostgreSQL's text refuses a NUL, a terminal shows the others).
    name = (file.filename or "upload").replace("\\", "/").rsplit("/", 1)[-1]
    filename = "".join(c for c in name if c.isprintable())[:255] or "upload"
    return FileObject.of(files.create(project, filename, purpose, file.file))


@router.get("", response_model=FileList, responses=error_responses(400, 401))
def list_files(
    files: Files,
    project: Project,
    purpose: str | None = None,
    limit: int = Query(10000, ge=1, le=10000),
    order: Literal["asc", "desc"] = "desc",
    after: str | None = None,
):
    """List files, newest first."""
    rows, has_more = files.list(project, purpose=purpose, limit=limit, after=after, order=order)
    return FileList.of([FileObject.of(r) for r in rows], has_more)


@router.get("/{file_id}", response_model=FileObject, responses=error_responses(401, 404))
def retrieve_file(files: Files, project: Project, file_id: str):
    """One file's object."""
    return FileObject.of(files.get(project, file_id))


@router.delete("/{file_id}", response_model=FileDeleted, responses=error_responses(401, 404))
def delete_file(files: Files, project: Project, file_id: str):
    """Delete a file; jobs already created keep their copy of its path."""
    files.delete(project, file_id)
    return FileDeleted(id=file_id, deleted=True)


@router.get(
    "/{file_id}/content",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": _BYTES, "text/csv": _BYTES}}, **error_responses(400, 401, 404)},
)
def file_content(files: Files, project: Project, file_id: str):
    """The file's bytes, as uploaded."""
    row, path = files.content_path(project, file_id)
    if not path.exists():
        raise InvalidRequest(f"the content of {file_id} is no longer stored", param="file_id", code="file_content_missing")
    media = "text/csv" if row.filename.endswith(".csv") else "application/octet-stream"
    return FileResponse(path, media_type=media, filename=row.filename)


@router.get("/{file_id}/preview", response_model=FilePreview, responses=error_responses(400, 401, 404))
def preview_file(
    files: Files,
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
    _row, path = files.content_path(project, file_id)
    if not path.exists():
        raise InvalidRequest(f"the content of {file_id} is no longer stored", param="file_id", code="file_content_missing")
    model = check_model(model)  # ModelNotFound is a 404 on param "model"
    from tuneserve.data.preview import preview_examples  # imports transformers: only when asked

    try:
        previews = preview_examples(path, model, n, max_seq_length=max_seq_length)
    except DataError as exc:
        raise InvalidRequest(f"{file_id} cannot be previewed: {exc}", param="file_id", code=exc.code) from None
    return FilePreview(data=previews, model=model)
