"""Uploaded files: their records, their bytes, and running the check at upload.

Owns: the `files` table and the blob store. Does not own: what makes data valid. The check is
given by whoever builds the service (app.py and the worker give data.validate_file), so that
persistence never imports the domain above it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, BinaryIO, Callable

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tuneserve.atomic import disk_full_is_insufficient_storage
from tuneserve.errors import InvalidRequest, NotFound, PayloadTooLarge
from tuneserve.ids import new_id, now
from tuneserve.store.blobs import BlobStore, BlobTooLarge
from tuneserve.store.pagination import page_after
from tuneserve.store.tables import File

PURPOSES = ("fine-tune", "fine-tune-results", "batch", "assistants", "vision", "user_data", "evals")


# (path, name) -> a report with ok, errors, summary(), format, n_examples, kind, as_dict(): data.validate_file.
FileCheck = Callable[..., Any]


class FileService:
    def __init__(self, sessions: sessionmaker[Session], blobs: BlobStore, max_upload_bytes: int, *, check: FileCheck):
        self.sessions = sessions
        self.blobs = blobs
        self.max_upload_bytes = max_upload_bytes
        self.check = check  # run on every fine-tune upload before it is recorded

    def create(self, project: str, filename: str, purpose: str, stream: BinaryIO) -> File:
        """Store the bytes under a new id, check fine-tune data, then record the file.

        A file that fails the check is not kept: the caller gets a 400 that names the line. Nor is
        one that does not fit on the disk: InsufficientStorage (a 507), with no bytes left behind.
        """
        if purpose not in PURPOSES:
            raise InvalidRequest(f"purpose must be one of {', '.join(PURPOSES)}", param="purpose", code="invalid_purpose")
        file_id = new_id("file")
        try:
            size = self.blobs.write(file_id, stream, max_bytes=self.max_upload_bytes)
        except BlobTooLarge:
            raise PayloadTooLarge(f"the file is larger than the limit of {self.max_upload_bytes} bytes", param="file") from None
        try:
            row = self._record(project, file_id, filename, purpose, size)
        except BaseException:
            self.blobs.delete(file_id)  # never keep bytes that no record points to
            raise
        return row

    def _record(self, project: str, file_id: str, filename: str, purpose: str, size: int) -> File:
        row = File(
            id=file_id,
            project=project,
            filename=filename or "upload",
            purpose=purpose,
            bytes=size,
            created_at=now(),
            status="processed",
            deleted=False,
        )
        if purpose == "fine-tune":
            report = self.check(self.blobs.path(file_id), name=filename)
            if not report.ok:
                first = report.errors[0] if report.errors else None
                raise InvalidRequest(
                    f"Invalid training file {filename!r}: {report.summary()}",
                    param="file",
                    code=first.code if first else "invalid_training_file",
                )
            row.format, row.n_examples = report.format, report.n_examples
            row.kind = getattr(report, "kind", "sft")
            row.status_details = report.summary()
            row.report = report.as_dict()
        # SQLite on the same full disk fails the insert with "database or disk is full".
        with disk_full_is_insufficient_storage("recording the uploaded file"), self.sessions.begin() as session:
            session.add(row)
        return row

    def create_bytes(self, project: str, filename: str, purpose: str, data: bytes) -> File:
        import io

        return self.create(project, filename, purpose, io.BytesIO(data))

    def list(
        self, project: str, *, purpose: str | None = None, limit: int = 10000, after: str | None = None, order: str = "desc"
    ) -> tuple[list[File], bool]:
        query = select(File).where(File.project == project, File.deleted.is_(False))
        if purpose:
            query = query.where(File.purpose == purpose)
        with self.sessions() as session:
            return page_after(session, query, File, after=after, limit=limit, newest_first=order != "asc")

    def get(self, project: str, file_id: str, param: str = "file_id") -> File:
        with self.sessions() as session:
            row = session.scalar(select(File).where(File.id == file_id, File.project == project, File.deleted.is_(False)))
        if row is None:
            raise NotFound(f"No such file: {file_id}", param=param, code="file_not_found")
        return row

    def find(self, project: str, ref: str, param: str) -> File:
        """A file by id, or (as the OPEA micro-service takes it) by the name it was uploaded under."""
        if ref.startswith("file-"):
            return self.get(project, ref, param)
        with self.sessions() as session:
            row = session.scalar(
                select(File)
                .where(File.filename == ref, File.project == project, File.deleted.is_(False), File.purpose == "fine-tune")
                .order_by(File.seq.desc())
            )
        if row is None:
            raise NotFound(f"No such file: {ref}", param=param, code="file_not_found")
        return row

    def delete(self, project: str, file_id: str) -> None:
        row = self.get(project, file_id)
        with self.sessions.begin() as session:
            session.get(File, row.seq).deleted = True
        # The bytes stay while a job may still read them; a deleted record is never served again.

    def content_path(self, project: str, file_id: str, param: str = "file_id") -> tuple[File, Path]:
        row = self.get(project, file_id, param)
        return row, self.blobs.path(row.id)
