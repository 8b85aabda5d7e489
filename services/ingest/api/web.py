"""The web page (`/`) and its static files (`/web`): upload, live progress, download, before/after."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

WEB_DIR = Path(__file__).resolve().parent.parent / "web"

router = APIRouter()


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    """The web page: upload, live progress, download, before/after."""
    return FileResponse(WEB_DIR / "index.html", media_type="text/html")


def static_files() -> StaticFiles:
    """The page's scripts and styles, mounted at `/web`."""
    return StaticFiles(directory=WEB_DIR)
