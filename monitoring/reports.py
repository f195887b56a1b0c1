"""Report files and their index: every monitoring run writes a JSON summary (for machines) and an HTML page (for
people) under ``<data_dir>/reports`` (``monitoring_reports_dir``), atomically, and refreshes ``index.html``.

Layout::

    reports/index.html                          every report, newest first
    reports/<kind>-<YYYYmmddTHHMMSSffffff>Z.json  summary: kind, created_at, status, headline, figures
    reports/<kind>-<...>Z.html                  the page a person opens (Evidently's for skew)

The serving app may expose the folder read-only with ``reports_router(settings)`` (GET /reports/ and
GET /reports/<file>); nothing else is reachable through it.
"""

from __future__ import annotations

import html
import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlplatform.models.locks import write_atomic
from mlplatform.settings import Settings

KINDS = ("skew", "consistency", "quality", "check")
REPORT_FILE = re.compile(r"^(skew|consistency|quality|check)-\d{8}T\d{12}Z\.(html|json)$")
INDEX_FILE = "index.html"


@dataclass(frozen=True)
class ReportFiles:
    """The files one report run wrote."""

    json_path: Path
    html_path: Path | None

    def to_dict(self) -> dict[str, str | None]:
        return {"json": str(self.json_path), "html": str(self.html_path) if self.html_path else None}


def reports_path(settings: Settings) -> Path:
    """The reports folder of ``settings`` (``monitoring_reports_dir`` or ``<data_dir>/reports``)."""
    folder = settings.monitoring_reports_dir or settings.data_path / "reports"
    return Path(folder).expanduser().resolve()


def report_stem(kind: str, when: datetime) -> str:
    """File name without extension of a ``kind`` report made at ``when`` (sorts by time)."""
    return f"{kind}-{when.astimezone(UTC):%Y%m%dT%H%M%S%f}Z"


def json_safe(value: Any) -> Any:
    """``value`` with NaN/inf turned into None, numpy scalars into Python ones, times into ISO strings."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and not isinstance(value, str | bytes):  # numpy scalar
        value = value.item()
    if hasattr(value, "isoformat"):  # pandas Timestamp after .item() is still a Timestamp
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_report(settings: Settings, kind: str, summary: dict[str, Any], page: str | None,
                 when: datetime | None = None) -> ReportFiles:
    """Write the HTML page (if any), then the JSON summary, each atomically; then refresh the index."""
    if kind not in KINDS:
        raise ValueError(f"unknown report kind {kind!r}")
    when = when or datetime.now(UTC)
    folder = reports_path(settings)
    stem = report_stem(kind, when)
    html_path = folder / f"{stem}.html" if page is not None else None
    if html_path is not None:
        write_atomic(html_path, page.encode("utf-8"))
    body = {"kind": kind, "created_at": when.astimezone(UTC).isoformat(),
            "html": html_path.name if html_path else None, **summary}
    json_path = folder / f"{stem}.json"
    write_atomic(json_path, json.dumps(json_safe(body), indent=2).encode("utf-8"))
    write_index(settings)
    return ReportFiles(json_path, html_path)


def list_reports(folder: Path) -> list[dict[str, Any]]:
    """Every report summary in ``folder``, newest first (unreadable files are skipped)."""
    out = []
    for path in Path(folder).glob("*.json"):
        if not REPORT_FILE.match(path.name):
            continue
        try:
            body = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        body["json"] = path.name
        out.append(body)
    return sorted(out, key=lambda b: (str(b.get("created_at", "")), b["json"]), reverse=True)


def render_index(entries: list[dict[str, Any]], title: str = "mlplatform monitoring reports") -> str:
    """The index page: one row per report, newest first, linking its HTML page and JSON summary."""
    rows = []
    for e in entries:
        status = str(e.get("status", ""))
        colour = {"breach": "#a30200", "ok": "#1e7b34"}.get(status, "#555")
        page = f'<a href="{html.escape(e["html"])}">open</a>' if e.get("html") else ""
        rows.append(
            "<tr>"
            f"<td>{html.escape(str(e.get('created_at', ''))[:19].replace('T', ' '))}Z</td>"
            f"<td>{html.escape(str(e.get('kind', '')))}</td>"
            f'<td style="color:{colour};font-weight:bold">{html.escape(status)}</td>'
            f"<td>{html.escape(str(e.get('headline', '')))}</td>"
            f'<td>{page}</td><td><a href="{html.escape(e["json"])}">json</a></td>'
            "</tr>"
        )
    body = "\n".join(rows) or '<tr><td colspan="6">no reports yet: run <code>mlplatform monitor check</code></td></tr>'
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}} th{{background:#f4f4f4}}</style></head>
<body><h1>{html.escape(title)}</h1><p>{len(entries)} report(s), newest first.</p>
<table><tr><th>created (UTC)</th><th>kind</th><th>status</th><th>summary</th><th>page</th><th>data</th></tr>
{body}
</table></body></html>
"""


def write_index(settings: Settings) -> Path:
    """Rewrite ``index.html`` of the reports folder from the summaries present (atomically)."""
    folder = reports_path(settings)
    path = folder / INDEX_FILE
    write_atomic(path, render_index(list_reports(folder)).encode("utf-8"))
    return path


def render_table_page(title: str, headline: str, sections: list[tuple[str, list[dict[str, Any]]]]) -> str:
    """A plain HTML page of titled tables (the consistency, quality and check reports)."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;margin:2em} table{border-collapse:collapse;margin-bottom:1.5em}"
             "td,th{border:1px solid #ccc;padding:4px 8px} th{background:#f4f4f4}</style></head><body>",
             f"<h1>{html.escape(title)}</h1><p>{html.escape(headline)}</p><p><a href='index.html'>all reports</a></p>"]
    for name, rows in sections:
        parts.append(f"<h2>{html.escape(name)}</h2>")
        if not rows:
            parts.append("<p>(none)</p>")
            continue
        columns = list(dict.fromkeys(k for r in rows for k in r))
        parts.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in columns) + "</tr>")
        for r in rows:
            parts.append("<tr>" + "".join(f"<td>{html.escape(_cell(r.get(c)))}</td>" for c in columns) + "</tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _cell(value: Any) -> str:
    value = json_safe(value)
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def reports_router(settings: Settings):
    """A read-only FastAPI router serving the reports folder: GET /reports/ (index) and GET /reports/<file>."""
    from fastapi import APIRouter, HTTPException
    from fastapi.responses import FileResponse, HTMLResponse

    router = APIRouter(prefix="/reports", tags=["monitoring"])
    folder = reports_path(settings)

    @router.get("/", response_class=HTMLResponse, summary="Monitoring reports, newest first")
    def index() -> HTMLResponse:
        return HTMLResponse(render_index(list_reports(folder)))

    @router.get("/{name}", summary="One monitoring report (HTML page or JSON summary)")
    def report(name: str) -> FileResponse:
        path = folder / name
        if name == INDEX_FILE:
            return FileResponse(path) if path.is_file() else index()
        if not REPORT_FILE.match(name) or not path.is_file():
            raise HTTPException(404, f"no report {name!r}; see /reports/")
        media = "application/json" if name.endswith(".json") else "text/html"
        return FileResponse(path, media_type=media)

    return router
