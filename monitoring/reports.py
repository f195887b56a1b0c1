"""Report files and their index: every monitoring run writes a JSON summary (for machines) and an HTML page (for
people) under ``<data_dir>/reports`` (``monitoring_reports_dir``), atomically, and refreshes ``index.html``.

Layout::

    reports/index.html                          every report, newest first
    reports/<kind>-<YYYYmmddTHHMMSSffffff>Z.json  summary: kind, created_at, status, headline, figures
    reports/<kind>-<...>Z.html                  the page a person opens (Evidently's for skew)
    reports/models/v<N>.html                    a model version's page (training writes it; the index links it)

The folder's format (file names, the index) is the contract ``mlplatform.contracts.reports``; the serving app
exposes the folder read-only through it. With ``MLPLATFORM_REPORTS_URI`` the folder is on another filesystem
(``file://``, ``memory://``, ``s3://``): each file is written as one whole put there, and read back through it.
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

from mlplatform import filesystems
from mlplatform.contracts.reports import INDEX_FILE, KINDS, NO_ICON, index_page, report_stem
from mlplatform.contracts.reports import list_reports as list_reports  # re-exported
from mlplatform.contracts.reports import render_index as render_index  # re-exported
from mlplatform.filesystems import Location
from mlplatform.settings import Settings


@dataclass(frozen=True)
class ReportFiles:
    """The files one report run wrote: local paths, or URIs (no credentials) on another filesystem."""

    json_path: Path | str
    html_path: Path | str | None
    location: Location | None = None  # the reports folder they are in

    @property
    def json_name(self) -> str:
        """The JSON summary's file name."""
        return str(self.json_path).rsplit("/", 1)[-1]

    @property
    def index(self) -> Path | str:
        """The index page of the folder they are in."""
        if self.location is not None:
            return self.location.file(INDEX_FILE)
        return Path(self.json_path).parent / INDEX_FILE

    def read_summary(self) -> dict[str, Any]:
        """The JSON summary as written (read back through the folder's filesystem)."""
        if self.location is not None:
            return json.loads(self.location.read_bytes(self.json_name))
        return json.loads(Path(self.json_path).read_text())

    def to_dict(self) -> dict[str, str | None]:
        return {"json": str(self.json_path), "html": str(self.html_path) if self.html_path else None}


def reports_path(settings: Settings) -> Path:
    """The local reports folder of ``settings`` (``monitoring_reports_dir`` or ``<data_dir>/reports``); reports go to
    ``reports_location`` (the same folder unless ``reports_uri`` names another place)."""
    return settings.layout.reports_dir


def reports_location(settings: Settings) -> Location:
    """Where reports go and are read from: ``reports_uri`` or the local ``reports_path``."""
    return filesystems.reports_location(settings.layout)


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
    """Write the HTML page (if any), then the JSON summary, each whole (atomically on the local disk, one put on
    another filesystem); then refresh the index."""
    if kind not in KINDS:
        raise ValueError(f"unknown report kind {kind!r}")
    when = when or datetime.now(UTC)
    folder = reports_location(settings)
    stem = report_stem(kind, when)
    html_name = f"{stem}.html" if page is not None else None
    html_path = folder.write_bytes(html_name, with_icon(page)) if html_name is not None and page is not None else None
    body = {"kind": kind, "created_at": when.astimezone(UTC).isoformat(), "html": html_name, **summary}
    json_path = folder.write_bytes(f"{stem}.json", json.dumps(json_safe(body), indent=2))
    write_index(settings)
    return ReportFiles(json_path, html_path, folder)


def write_index(settings: Settings) -> Path | str:
    """Rewrite ``index.html`` of the reports folder from the summaries and model pages present (whole)."""
    folder = reports_location(settings)
    return folder.write_bytes(INDEX_FILE, index_page(folder))


def with_icon(page: str) -> str:
    """``page`` declaring an empty icon (``NO_ICON``) in its head, unless it declares one already (Evidently's pages
    do not) or has no head."""
    match = re.search(r"<head[^>]*>", page, flags=re.IGNORECASE)
    if match is None or re.search(r"<link[^>]+rel=[\"']?(shortcut )?icon", page, flags=re.IGNORECASE):
        return page
    return page[:match.end()] + NO_ICON + page[match.end():]


def with_banner(page: str, text: str) -> str:
    """``page`` with a warning banner (``text``) at the top of its body: e.g. "not judged: too few rows"."""
    banner = ("<div style='background:#fff3cd;border:2px solid #b58900;padding:0.8em 1.2em;margin:1em;"
              f"font:bold 1.1em sans-serif' class='mlplatform-caveat'>{html.escape(text)}</div>")
    match = re.search(r"<body[^>]*>", page, flags=re.IGNORECASE)
    if match is None:
        return banner + page
    return page[:match.end()] + banner + page[match.end():]


def render_table_page(title: str, headline: str, sections: list[tuple[str, list[dict[str, Any]]]]) -> str:
    """A plain HTML page of titled tables (the consistency, quality and check reports)."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'>{NO_ICON}<title>{html.escape(title)}</title>",
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
