"""API keys: created by `tuneserve keys create`, stored as SHA-256 hashes, one project each.

Keys are 256-bit random tokens, so a fast hash is enough (no password stretching needed).
"""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import exists, select
from sqlalchemy.orm import Session, sessionmaker

from tuneserve.ids import new_id, now
from tuneserve.store.tables import ApiKey


def hash_key(key: str) -> str:
    """The SHA-256 hex digest a key (or an internal token) is kept as."""
    return hashlib.sha256(key.encode()).hexdigest()


class KeyService:
    def __init__(self, sessions: sessionmaker[Session]):
        self.sessions = sessions
        self._some_key = False  # once a key exists it stays (keys are never deleted): no query per request after

    def create(self, project: str) -> str:
        key = "ts-" + secrets.token_urlsafe(32)
        with self.sessions.begin() as session:
            session.add(ApiKey(id=new_id("key"), project=project, key_hash=hash_key(key), created_at=now()))
        return key

    def any(self) -> bool:
        """Whether any key exists. Only True is remembered: a key created by `tuneserve keys create` in another
        process while the server runs must take effect at once, so False is asked again each time."""
        if not self._some_key:
            with self.sessions() as session:
                self._some_key = bool(session.scalar(select(exists().where(ApiKey.seq > 0))))
        return self._some_key

    def project_of(self, key: str) -> str | None:
        with self.sessions() as session:
            return session.scalar(select(ApiKey.project).where(ApiKey.key_hash == hash_key(key)))
