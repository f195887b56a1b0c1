"""GET /reports/ (the monitoring reports index) and GET /reports/<file>: the reports folder, read-only.

The folder is ``reports_location(settings.layout)``: the local folder, or (``MLPLATFORM_REPORTS_URI``) a folder on
another filesystem, read through it."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, HTMLResponse, Response

from mlplatform.contracts.reports import INDEX_FILE, REPORT_FILE, index_page
from mlplatform.filesystems import reports_location
from mlplatform.models.page import model_page_html, parse_page_name
from mlplatform.settings import Settings


def reports_router(settings: Settings) -> APIRouter:
    """A read-only router over ``settings``' reports folder; nothing but report files is reachable through it."""
    router = APIRouter(prefix="/reports", tags=["monitoring"])
    folder = reports_location(settings.layout)

    @router.get("/", response_class=HTMLResponse, summary="Monitoring reports, newest first")
    def index() -> HTMLResponse:
        return HTMLResponse(index_page(folder))

    @router.get("/{name}", summary="One monitoring report (HTML page or JSON summary)", response_model=None)
    def report(name: str) -> FileResponse | HTMLResponse | Response:
        if name != INDEX_FILE and not REPORT_FILE.match(name):
            raise HTTPException(404, f"no report {name!r}; see /reports/")
        media = "application/json" if name.endswith(".json") else "text/html"
        if folder.local is not None:
            path = folder.local / name
            if path.is_file():
                return FileResponse(path, media_type=media)
        else:
            try:
                return Response(folder.read_bytes(name), media_type=media)
            except (FileNotFoundError, IsADirectoryError):
                pass
        if name == INDEX_FILE:
            return index()
        raise HTTPException(404, f"no report {name!r}; see /reports/")

    @router.get("/models/{name}", response_class=HTMLResponse, summary="One model version's page (v<N>.html)")
    def model_page(name: str) -> HTMLResponse:
        return HTMLResponse(model_page_html(settings, parse_page_name(name)))

    return router
