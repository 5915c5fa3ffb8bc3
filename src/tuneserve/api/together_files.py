"""Together's upload: three requests where OpenAI's takes one.

1. POST /v1/files with a form naming the file (`file_name`, `purpose`, no bytes): api/files.py hands it to
   `start_upload`, which answers 302 with `Location` (where to PUT the bytes) and `X-Together-File-Id`.
2. PUT of the raw bytes to that Location. Together's SDK sends it without the API key (it is a presigned URL to
   it), so the URL carries a secret of its own: a random token, kept hashed, usable once.
3. POST /v1/files/{id}/preprocess (with the key): the stored file, in Together's shape.

Past 5 GB the SDK uploads in parts instead (S3's multipart protocol, spoken to the API):
1. POST /v1/files/multipart/initiate (file_name, file_size, num_parts, checksum): an upload id and, per part, a URL
   to PUT it to (a secret URL again);
2. a PUT per part, answered with its ETag (the part's MD5), up to 4 at once;
3. POST /v1/files/multipart/complete with the ETags: the parts, checked against them, the file's size and its
   SHA-256, are joined into one FileService.create; or POST /v1/files/multipart/abort, which drops them.

The bytes go through FileService.create, as any upload: the same check, a 400 naming the bad line. A pending
upload is a small JSON record under DATA_DIR/together_uploads/ (the API may run as several processes), its
parts beside it in a folder of their own.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Literal

from pydantic import BaseModel, Field

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from tuneserve.api.deps import Files, Project
from tuneserve.api.limits import TOGETHER_UPLOAD_PREFIX
from tuneserve.api.responses import error_responses
from tuneserve.api.together_schemas import TogetherFile
from tuneserve.atomic import disk_full_is_insufficient_storage
from tuneserve.errors import InvalidRequest, NotFound, PayloadTooLarge
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


def _new_pending(files: FileService, project: str, purpose: str, file_name: str, **extra) -> tuple[str, str]:
    """Record a pending upload; (its id, the secret its PUT URLs carry)."""
    upload_id = "upload-" + secrets.token_hex(12)
    token = secrets.token_urlsafe(32)
    name = "".join(c for c in file_name.replace("\\", "/").rsplit("/", 1)[-1] if c.isprintable())[:255] or "upload"
    record = {"project": project, "purpose": purpose, "filename": name, "token": _digest(token), "created_at": now(), **extra}
    pending = _pending_dir(files)
    pending.mkdir(parents=True, exist_ok=True)
    (pending / f"{upload_id}.json").write_text(json.dumps(record))
    return upload_id, token


def start_upload(request: Request, files: FileService, project: str, purpose: str, file_name: str) -> Response:
    """Step 1: record the pending upload and send the SDK where to PUT its bytes."""
    upload_id, token = _new_pending(files, project, purpose, file_name)
    location = str(request.url_for("together_upload_bytes", upload_id=upload_id, token=token))
    return Response(status_code=302, headers={"Location": location, "X-Together-File-Id": upload_id})


def _read_pending(files: FileService, upload_id: str) -> dict:
    path = _pending_dir(files) / f"{upload_id}.json"
    if not upload_id.startswith("upload-") or not upload_id.replace("-", "").isalnum() or not path.is_file():
        raise NotFound(f"No such upload: {upload_id}", param="upload_id", code="upload_not_found")
    record = json.loads(path.read_text())
    if now() - record["created_at"] > PENDING_TTL_S:
        _drop(files, upload_id)
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
    if not secrets.compare_digest(record["token"], _digest(token)) or "num_parts" in record:  # a multipart one: PUT parts
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


# -- multipart (files over the SDK's 5 GB threshold) -----------------------------------------------

MAX_PARTS = 250  # S3's limit is 10,000; Together's SDK never asks for more than this


class InitiateBody(BaseModel):
    file_name: str = Field(min_length=1)
    file_size: int = Field(ge=1)
    num_parts: int = Field(ge=1, le=MAX_PARTS)
    purpose: str = "fine-tune"
    file_type: Literal["jsonl", "parquet", "csv"] = "jsonl"
    checksum: str | None = Field(None, description="the file's SHA-256, hex; checked when the upload completes")


class PartUrl(BaseModel):
    PartNumber: int
    URL: str
    Headers: dict[str, str] = {}


class Initiated(BaseModel):
    upload_id: str
    file_id: str = Field(description="the upload's id until it completes (the SDK sends both back)")
    parts: list[PartUrl]


class CompletedPart(BaseModel):
    part_number: int = Field(ge=1, le=MAX_PARTS)
    etag: str


class CompleteBody(BaseModel):
    upload_id: str
    file_id: str | None = None
    parts: list[CompletedPart] = Field(min_length=1)


class AbortBody(BaseModel):
    upload_id: str
    file_id: str | None = None


def _parts_dir(files: FileService, upload_id: str) -> Path:
    return _pending_dir(files) / f"{upload_id}.parts"


def _own_multipart(files: FileService, project: str, upload_id: str) -> dict:
    record = _read_pending(files, upload_id)
    if record["project"] != project or "num_parts" not in record:
        raise NotFound(f"No such multipart upload: {upload_id}", param="upload_id", code="upload_not_found")
    return record


@router.post("/v1/files/multipart/initiate", response_model=Initiated, responses=error_responses(400, 401, 413))
def initiate_multipart(request: Request, files: Files, project: Project, body: InitiateBody):
    """Together's large upload, first step: where to PUT each part (no API key needed there: the URL is the key)."""
    if body.file_size > files.max_upload_bytes:
        raise PayloadTooLarge(f"the file is larger than the limit of {files.max_upload_bytes} bytes", param="file_size")
    upload_id, token = _new_pending(
        files, project, body.purpose, body.file_name, num_parts=body.num_parts, file_size=body.file_size, checksum=body.checksum
    )
    _parts_dir(files, upload_id).mkdir()
    urls = [
        PartUrl(PartNumber=n, URL=str(request.url_for("together_upload_part", upload_id=upload_id, token=token, part=n)))
        for n in range(1, body.num_parts + 1)
    ]
    return Initiated(upload_id=upload_id, file_id=upload_id, parts=urls)


@router.put(
    UPLOAD_PREFIX + "{upload_id}/{token}/parts/{part}", name="together_upload_part", responses=error_responses(400, 404, 413)
)
async def upload_part(request: Request, files: Files, upload_id: str, token: str, part: int):
    """One part's bytes; the answer's ETag header is their MD5, which the completion must repeat."""
    record = await run_in_threadpool(_read_pending, files, upload_id)
    if not secrets.compare_digest(record["token"], _digest(token)) or "num_parts" not in record:
        raise NotFound(f"No such upload: {upload_id}", param="upload_id", code="upload_not_found")
    if not 1 <= part <= record["num_parts"]:
        raise InvalidRequest(f"part must be 1 to {record['num_parts']}, not {part}", param="part", code="invalid_part")
    md5 = hashlib.md5(usedforsecurity=False)
    target = _parts_dir(files, upload_id) / f"{part:05d}"
    if not target.parent.is_dir():  # aborted meanwhile
        raise NotFound(f"No such upload: {upload_id}", param="upload_id", code="upload_not_found")
    # Written aside, then renamed: a retried PUT replaces the part whole, a failed one leaves nothing.
    partial = target.with_name(f"{target.name}.{secrets.token_hex(4)}.partial")
    try:
        with disk_full_is_insufficient_storage("storing an upload's part"), partial.open("wb") as out:
            async for chunk in request.stream():
                md5.update(chunk)
                out.write(chunk)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return Response(status_code=200, headers={"ETag": f'"{md5.hexdigest()}"'})


@router.post("/v1/files/multipart/complete", response_model=TogetherFile, responses=error_responses(400, 401, 404, 413, 507))
def complete_multipart(files: Files, project: Project, body: CompleteBody):
    """Join the parts into the file, once each matches its ETag and the whole its size and checksum; then the
    file's check, as for any upload (a 400 naming the line)."""
    record = _own_multipart(files, project, body.upload_id)
    numbers = sorted(p.part_number for p in body.parts)
    if numbers != list(range(1, record["num_parts"] + 1)):
        raise InvalidRequest(
            f"parts must be 1 to {record['num_parts']}, each once; got {numbers}", param="parts", code="invalid_parts"
        )
    directory = _parts_dir(files, body.upload_id)
    etags = {p.part_number: p.etag.strip('"') for p in body.parts}
    paths = [directory / f"{n:05d}" for n in numbers]
    whole = hashlib.sha256()  # one read of each part gives its MD5 (the ETag) and the file's SHA-256
    for number, path in zip(numbers, paths):
        part = hashlib.md5(usedforsecurity=False)
        if not path.is_file() or _hash(path, part, whole) != etags[number]:
            raise InvalidRequest(
                f"part {number} is missing or its ETag does not match the bytes received", param="parts", code="invalid_parts"
            )
    size = sum(p.stat().st_size for p in paths)
    if size != record["file_size"]:
        raise InvalidRequest(
            f"the parts hold {size} bytes, not the {record['file_size']} announced", param="parts", code="invalid_parts"
        )
    if record.get("checksum") and whole.hexdigest() != record["checksum"].lower():
        raise InvalidRequest("the parts' SHA-256 is not the checksum announced", param="parts", code="checksum_mismatch")
    stream = _Joined(paths)
    try:
        row = files.create(project, record["filename"], record["purpose"], stream)
    finally:
        stream.close()
    _drop(files, body.upload_id)
    return TogetherFile.of(row)


@router.post("/v1/files/multipart/abort", responses=error_responses(400, 401, 404))
def abort_multipart(files: Files, project: Project, body: AbortBody):
    """Drop an unfinished multipart upload and the parts it has received."""
    _own_multipart(files, project, body.upload_id)
    _drop(files, body.upload_id)
    return {"upload_id": body.upload_id, "aborted": True}


def _drop(files: FileService, upload_id: str) -> None:
    shutil.rmtree(_parts_dir(files, upload_id), ignore_errors=True)
    (_pending_dir(files) / f"{upload_id}.json").unlink(missing_ok=True)


def _hash(path: Path, digest, also) -> str:
    """`digest` of the file (hex), feeding `also` the same bytes."""
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            also.update(chunk)
    return digest.hexdigest()


class _Joined:
    """Files read one after another as one stream (FileService.create reads it with .read(n))."""

    def __init__(self, paths: list[Path]):
        self._paths = list(paths)
        self._current: BinaryIO | None = None

    def read(self, n: int = -1) -> bytes:
        while self._current is not None or self._paths:
            if self._current is None:
                self._current = self._paths.pop(0).open("rb")
            if chunk := self._current.read(n):
                return chunk
            self._current.close()
            self._current = None
        return b""

    def close(self) -> None:
        if self._current is not None:
            self._current.close()
