"""KeyService: keys map to one project each; only their SHA-256 is stored."""

from __future__ import annotations

import hashlib

from sqlalchemy import select

from tuneserve.store.keys import KeyService
from tuneserve.store.tables import ApiKey


def test_keys(sessions):
    keys = KeyService(sessions)
    assert keys.any() is False

    key_a = keys.create("proj-a")
    assert keys.any() is True
    key_b = keys.create("proj-b")

    assert key_a != key_b and key_a.startswith("ts-") and len(key_a) > 40
    assert keys.project_of(key_a) == "proj-a"
    assert keys.project_of(key_b) == "proj-b"
    assert keys.project_of(key_a + "x") is None
    assert keys.project_of("") is None
    assert keys.project_of(hashlib.sha256(key_a.encode()).hexdigest()) is None  # the hash is not a key


def test_only_the_hash_is_stored(sessions):
    keys = KeyService(sessions)
    key = keys.create("proj-a")
    with sessions() as session:
        rows = list(session.scalars(select(ApiKey)))
    assert len(rows) == 1
    row = rows[0]
    assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert row.project == "proj-a" and row.id.startswith("key-")
    stored = " ".join(str(v) for v in (row.id, row.project, row.key_hash, row.created_at))
    assert key not in stored and key.removeprefix("ts-") not in stored
