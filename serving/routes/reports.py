"""GET /reports/ (the monitoring reports index) and GET /reports/<file>: the reports folder, read-only."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, HTMLResponse

from mlplatform.contracts.reports import INDEX_FILE, REPORT_FILE, index_page
from mlplatform.models.page import model_page_html, parse_page_name
from mlplatform.settings import Settings


def reports_router(settings: Settings) -> APIRouter:
    """A read-only router over ``settings``' reports folder; nothing but report files is reachable through it."""
    router = APIRouter(prefix="/reports", tags=["monitoring"])
    folder = settings.layout.reports_dir

    @router.get("/", response_class=HTMLResponse, summary="Monitoring reports, newest first")
    def index() -> HTMLResponse:
        return HTMLResponse(index_page(folder))

    @router.get("/{name}", summary="One monitoring report (HTML page or JSON summary)", response_model=None)
    def report(name: str) -> FileResponse | HTMLResponse:
        path = folder / name
        if name == INDEX_FILE:
            return FileResponse(path) if path.is_file() else index()
        if not REPORT_FILE.match(name) or not path.is_file():
            raise HTTPException(404, f"no report {name!r}; see /reports/")
        media = "application/json" if name.endswith(".json") else "text/html"
        return FileResponse(path, media_type=media)

    @router.get("/models/{name}", response_class=HTMLResponse, summary="One model version's page (v<N>.html)")
    def model_page(name: str) -> HTMLResponse:
        return HTMLResponse(model_page_html(settings, parse_page_name(name)))

    return router
