"""Cursor pagination as OpenAI does it: `after` is the id of the last item already seen."""

from __future__ import annotations

from sqlalchemy import Select, select
from sqlalchemy.orm import Session


def page_after(session: Session, query: Select, table, *, after: str | None, limit: int, newest_first: bool = True):
    """Return (rows, has_more). Ordering is by insertion (`seq`), newest first by default."""
    if after:
        cursor = session.scalar(select(table.seq).where(table.id == after))
        if cursor is not None:
            query = query.where(table.seq < cursor if newest_first else table.seq > cursor)
    query = query.order_by(table.seq.desc() if newest_first else table.seq.asc()).limit(limit + 1)
    rows = list(session.scalars(query))
    return rows[:limit], len(rows) > limit
