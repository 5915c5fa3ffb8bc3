"""The web console: `/` is its page, `/ui/...` its static files (tuneserve/ui/, shipped in the package).

Owns: serving those files, nothing else. The console itself is a client of the public HTTP API
(it calls /v1/... with fetch, with the user's key when keys are on), so these routes need no key:
the files hold no data. They stay out of the OpenAPI schema, which documents the API only.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from tuneserve.errors import NotFound

router = APIRouter(include_in_schema=False)

UI_DIR = Path(__file__).resolve().parent.parent / "ui"

# Browsers guess poorly for modules and SVG on some systems (a wrong type blocks an ES module).
_MEDIA_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".svg": "image/svg+xml"}
# Revalidate on every load (FileResponse sends an ETag), so an upgraded server never runs stale scripts.
_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}


def _file(path: Path) -> FileResponse:
    return FileResponse(path, media_type=_MEDIA_TYPES.get(path.suffix), headers=_HEADERS)


@router.get("/")
def console_page():
    """The console's single page; it routes by the URL's #fragment, so a reload stays where it was."""
    return _file(UI_DIR / "index.html")


@router.get("/ui/{path:path}")
def console_file(path: str):
    """A static file of the console, only from inside the ui folder."""
    target = (UI_DIR / path).resolve()
    if not target.is_relative_to(UI_DIR) or not target.is_file():
        raise NotFound(f"No console file {path!r}")
    return _file(target)
