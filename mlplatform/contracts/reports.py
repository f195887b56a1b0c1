"""The monitoring reports folder: what monitoring writes and the service shows read-only at /reports/.

Layout (``settings.layout.reports_dir``)::

    index.html                                  every report, newest first
    <kind>-<YYYYmmddTHHMMSSffffff>Z.json        summary: kind, created_at, status, headline, figures, html
    <kind>-<...>Z.html                          the page a person opens (Evidently's for skew)
"""

from __future__ import annotations

import html
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

KINDS = ("skew", "consistency", "quality", "check")
REPORT_FILE = re.compile(r"^(skew|consistency|quality|check)-\d{8}T\d{12}Z\.(html|json)$")
INDEX_FILE = "index.html"


def report_stem(kind: str, when: datetime) -> str:
    """File name without extension of a ``kind`` report made at ``when`` (sorts by time)."""
    return f"{kind}-{when.astimezone(UTC):%Y%m%dT%H%M%S%f}Z"


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
