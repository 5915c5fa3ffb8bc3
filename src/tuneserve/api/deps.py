"""Request dependencies: the caller's project (from the API key) and the services on app.state."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from tuneserve.errors import Unauthorized

DEFAULT_PROJECT = "default"


def current_project(request: Request) -> str:
    """With no key created, everyone is the default project (the server is loopback-only then).
    Once a key exists, every request needs `Authorization: Bearer <key>`."""
    keys = request.app.state.keys
    if not keys.any():
        return DEFAULT_PROJECT
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Missing API key: send 'Authorization: Bearer <key>'")
    # The evaluation worker calls this server with a short-lived in-memory token of one project (evaluation/worker.py).
    internal = getattr(request.app.state, "internal_tokens", None)
    project = (internal.project_of(token.strip()) if internal is not None else None) or keys.project_of(token.strip())
    if project is None:
        raise Unauthorized("Incorrect API key provided")
    return project


Project = Annotated[str, Depends(current_project)]
