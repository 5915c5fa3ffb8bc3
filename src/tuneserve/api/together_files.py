"""Together's upload: three requests where OpenAI's takes one.

1. POST /v1/files with a form naming the file (`file_name`, `purpose`, no bytes): api/files.py hands it to
   `start_upload`, which answers 302 with `Location` (where to PUT the bytes) and `X-Together-File-Id`.
2. PUT of the raw bytes to that Location. Together's SDK sends it without the API key (it is a presigned URL to
   it), so the URL carries a secret of its own: a random token, kept hashed, usable once.
3. POST /v1/files/{id}/preprocess (with the key): the stored file, in Together's shape.

The bytes go through FileService.create, as any upload: the same check, a 400 naming the bad line. A pending
upload is a small JSON record under DATA_DIR/together_uploads/ (the API may run as several processes).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import tempfile
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from tuneserve.api.deps import Files, Project
from tuneserve.api.limits import TOGETHER_UPLOAD_PREFIX
from tuneserve.api.responses import error_responses
from tuneserve.api.together_schemas import TogetherFile
from tuneserve.errors import InvalidRequest, NotFound
from tuneserve.ids import now
from tuneserve.store.files import FileService

router = APIRouter(tags=["together"])

# Outside /v1: no API key here, the URL is the key. api/limits.py gives PUTs under it the upload limit.
UPLOAD_PREFIX = TOGETHER_UPLOAD_PREFIX
PENDING_TTL_S = 24 * 3600

# OpenAPI: the 302 of the upload route's first step.
UPLOAD_REDIRECT = {
    302: {
        "description": "Together's upload, first step (a form with file_name and no file): PUT the bytes to Location",
        "headers": {
            "Location": {"schema": {"type": "string"}, "description": "where to PUT the file's bytes (no API key needed)"},
            "X-Together-File-Id": {"schema": {"type": "string"}, "description": "the id to POST /v1/files/{id}/preprocess"},
        },
    }
}


def _pending_dir(files: FileService) -> Path:
    return files.blobs.root.parent / "together_uploads"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start_upload(request: Request, files: FileService, project: str, purpose: str, file_name: str) -> Response:
    """Step 1: record the pending upload and send the SDK where to PUT its bytes."""
    upload_id = "upload-" + secrets.token_hex(12)
    token = secrets.token_urlsafe(32)
    name = "".join(c for c in file_name.replace("\\", "/").rsplit("/", 1)[-1] if c.isprintable())[:255] or "upload"
    record = {"project": project, "purpose": purpose, "filename": name, "token": _digest(token), "created_at": now()}
    pending = _pending_dir(files)
    pending.mkdir(parents=True, exist_ok=True)
    (pending / f"{upload_id}.json").write_text(json.dumps(record))
    location = str(request.url_for("together_upload_bytes", upload_id=upload_id, token=token))
    return Response(status_code=302, headers={"Location": location, "X-Together-File-Id": upload_id})


def _read_pending(files: FileService, upload_id: str) -> dict:
    path = _pending_dir(files) / f"{upload_id}.json"
    if not upload_id.startswith("upload-") or not upload_id.replace("-", "").isalnum() or not path.is_file():
        raise NotFound(f"No such upload: {upload_id}", param="upload_id", code="upload_not_found")
    record = json.loads(path.read_text())
    if now() - record["created_at"] > PENDING_TTL_S:
        path.unlink(missing_ok=True)
        raise NotFound(f"The upload {upload_id} has expired; start it again", param="upload_id", code="upload_not_found")
    return record


@router.put(
    UPLOAD_PREFIX + "{upload_id}/{token}",
    name="together_upload_bytes",
    response_model=TogetherFile,
    responses=error_responses(400, 404, 413, 507),
)
async def upload_bytes(request: Request, files: Files, upload_id: str, token: str):
    """Together's upload, second step: the file's raw bytes, to the URL the first step gave (the URL is the key)."""
    record = await run_in_threadpool(_read_pending, files, upload_id)
    if not secrets.compare_digest(record["token"], _digest(token)):
        raise NotFound(f"No such upload: {upload_id}", param="upload_id", code="upload_not_found")
    if record.get("file_id"):
        raise InvalidRequest(f"The upload {upload_id} has its bytes already", param="upload_id", code="upload_complete")
    # Spooled: a small file stays in memory, a large one goes to disk before FileService copies it into place.
    with tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024) as body:
        async for chunk in request.stream():
            body.write(chunk)
        body.seek(0)
        row = await run_in_threadpool(files.create, record["project"], record["filename"], record["purpose"], body)
    record["file_id"] = row.id
    (_pending_dir(files) / f"{upload_id}.json").write_text(json.dumps(record))
    return TogetherFile.of(row)


@router.post("/v1/files/{file_id}/preprocess", response_model=TogetherFile, responses=error_responses(400, 401, 404))
def preprocess(files: Files, project: Project, file_id: str):
    """Together's upload, third step: the uploaded file (by the upload's id, or by its own)."""
    if file_id.startswith("upload-"):
        record = _read_pending(files, file_id)
        if record["project"] != project:
            raise NotFound(f"No such upload: {file_id}", param="file_id", code="upload_not_found")
        if not record.get("file_id"):
            raise InvalidRequest(
                f"The upload {file_id} has no bytes yet: PUT them first", param="file_id", code="upload_incomplete"
            )
        (_pending_dir(files) / f"{file_id}.json").unlink(missing_ok=True)
        file_id = record["file_id"]
    return TogetherFile.of(files.get(project, file_id))
