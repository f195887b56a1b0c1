"""The monitoring reports folder: what monitoring writes and the service shows read-only at /reports/.

Layout (``settings.layout.reports_dir``)::

    index.html                                  every report, newest first
    <kind>-<YYYYmmddTHHMMSSffffff>Z.json        summary: kind, created_at, status, headline, figures, html
    <kind>-<...>Z.html                          the page a person opens (Evidently's for skew)
    models/v<N>.html                            the page of model version N (mlplatform.models.page)

The folder may be on another filesystem (``mlplatform.filesystems.reports_location``: ``MLPLATFORM_REPORTS_URI``, e.g.
``s3://bucket/reports``); every function here takes a local folder or a ``mlplatform.filesystems.Location`` and
lists and reads through its filesystem.
"""

from __future__ import annotations

import html
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlplatform.filesystems import Location, as_location

KINDS = ("skew", "consistency", "quality", "check")
REPORT_FILE = re.compile(r"^(skew|consistency|quality|check)-\d{8}T\d{12}Z\.(html|json)$")
INDEX_FILE = "index.html"
MODEL_PAGES_DIR = "models"
# Every page declares an empty icon, so a browser does not ask for /favicon.ico (a 404 and a console error).
NO_ICON = '<link rel="icon" href="data:,">'
MODEL_PAGE_FILE = re.compile(r"^v(\d+)\.html$")


def model_page_name(version: int) -> str:
    """File name of model version ``version``'s page inside ``MODEL_PAGES_DIR``: ``v<N>.html``."""
    return f"v{int(version)}.html"


def list_model_pages(folder: Path | Location) -> list[int]:
    """Versions whose model page is in ``folder``/models, newest first."""
    names = as_location(folder).glob(f"{MODEL_PAGES_DIR}/v*.html")
    found = (MODEL_PAGE_FILE.match(name.rsplit("/", 1)[-1]) for name in names)
    return sorted((int(m.group(1)) for m in found if m), reverse=True)


def index_page(folder: Path | Location) -> str:
    """The index of ``folder`` as it stands: its reports and its model pages."""
    return render_index(list_reports(folder), model_pages=list_model_pages(folder))


def report_stem(kind: str, when: datetime) -> str:
    """File name without extension of a ``kind`` report made at ``when`` (sorts by time)."""
    return f"{kind}-{when.astimezone(UTC):%Y%m%dT%H%M%S%f}Z"


def list_reports(folder: Path | Location) -> list[dict[str, Any]]:
    """Every report summary in ``folder``, newest first (unreadable files are skipped)."""
    location = as_location(folder)
    out = []
    for name in location.glob("*.json"):
        if not REPORT_FILE.match(name):
            continue
        try:
            body = json.loads(location.read_bytes(name))
        except (OSError, ValueError):
            continue
        if not isinstance(body, dict):
            continue
        body["json"] = name
        out.append(body)
    return sorted(out, key=lambda b: (str(b.get("created_at", "")), b["json"]), reverse=True)


def render_index(entries: list[dict[str, Any]], title: str = "mlplatform monitoring reports",
                 model_pages: list[int] | None = None) -> str:
    """The index page: one row per report, newest first, linking its HTML page and JSON summary; then a link to
    each model version's page in ``model_pages``."""
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
    models = "".join(f'<li><a href="{MODEL_PAGES_DIR}/{model_page_name(v)}">model v{v}</a></li>'
                     for v in model_pages or [])
    models = f"<ul id=\"model-pages\">{models}</ul>" if models else "<p>none yet: <code>mlplatform train</code></p>"
    return f"""<!doctype html>
<html><head><meta charset="utf-8">{NO_ICON}<title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}} th{{background:#f4f4f4}}</style></head>
<body><h1>{html.escape(title)}</h1><p>{len(entries)} report(s), newest first.</p>
<table><tr><th>created (UTC)</th><th>kind</th><th>status</th><th>summary</th><th>page</th><th>data</th></tr>
{body}
</table>
<h2>Model pages</h2>
{models}
</body></html>
"""
