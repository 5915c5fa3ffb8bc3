"""/v1/files: upload, list, retrieve, delete, content (OpenAI's Files API)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse

from tuneserve.api.deps import Project
from tuneserve.api.schemas import file_object, list_object
from tuneserve.errors import InvalidRequest

router = APIRouter(prefix="/v1/files", tags=["files"])


@router.post("")
def upload_file(request: Request, project: Project, file: UploadFile, purpose: str = Form()):
    """Upload a file. For purpose `fine-tune` the data is checked first; a bad line is a 400 naming it."""
    # The name is kept as metadata only; bytes are stored under the new file id.
    filename = (file.filename or "upload").replace("\\", "/").rsplit("/", 1)[-1][:255] or "upload"
    row = request.app.state.files.create(project, filename, purpose, file.file)
    return file_object(row)


@router.get("")
def list_files(request: Request, project: Project, purpose: str | None = None, limit: int = Query(10000, ge=1, le=10000),
               order: Literal["asc", "desc"] = "desc", after: str | None = None):
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
