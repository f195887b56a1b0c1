"""The newest `mlplatform monitor check` verdict as Prometheus gauges (monitoring -> the service's /metrics).

`monitor check` writes its summary as ``check-<time>Z.json`` in the reports folder (``mlplatform.contracts.reports``).
The service registers ``CheckReportCollector`` on its metrics registry; each scrape reads the newest summary, again
only when the folder changed (its mtime: reports are renamed into place, which changes it), so a scrape costs one
``stat`` most of the time. A reports folder on another filesystem (``MLPLATFORM_REPORTS_URI``) has no mtime: it is
listed again at most every ``REMOTE_RELIST_SECONDS``. No check report yet (or an unreadable one): the families are
declared with no sample.

* ``mlplatform_monitor_check_breaches``: breaches the newest check named (0 when it passed);
* ``mlplatform_monitor_check_timestamp_seconds``: when it ran (Unix time), to tell a stale verdict;
* ``mlplatform_monitor_check_status{status=...}``: 1 for its status (``ok``, ``breach``, ``error``,
  ``nothing to check``), 0 for the others.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client.core import GaugeMetricFamily

from mlplatform.contracts.reports import REPORT_FILE
from mlplatform.filesystems import Location, as_location

BREACHES = "mlplatform_monitor_check_breaches"
TIMESTAMP = "mlplatform_monitor_check_timestamp_seconds"
STATUS = "mlplatform_monitor_check_status"
STATUSES = ("ok", "breach", "error", "nothing to check")  # monitoring.check.CheckResult.status
REMOTE_RELIST_SECONDS = 30.0


@dataclass(frozen=True)
class CheckVerdict:
    """What the newest check report says."""

    report: str  # its JSON file's name
    created_at: float  # Unix seconds
    status: str
    breaches: int


def newest_check_report(folder: Path | Location) -> Path | str | None:
    """The newest ``check-*.json`` summary in ``folder`` (names sort by time), or None: a local path, or the name
    in a folder on another filesystem."""
    if isinstance(folder, Location) and not folder.is_local:
        try:
            names = [n for n in folder.glob("check-*.json") if REPORT_FILE.match(n)]
        except OSError:
            return None
        return max(names) if names else None
    folder = folder.local if isinstance(folder, Location) else folder
    try:
        names = [e.name for e in os.scandir(folder) if e.name.startswith("check-") and e.name.endswith(".json")]
    except OSError:
        return None
    names = [n for n in names if REPORT_FILE.match(n)]
    return Path(folder) / max(names) if names else None


def parse_verdict(name: str, body: dict[str, Any]) -> CheckVerdict | None:
    """The verdict of a check summary ``body`` (file ``name``); None if it is not one."""
    try:
        created = datetime.fromisoformat(str(body["created_at"]))
    except (KeyError, ValueError):
        return None
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    breaches = body.get("breaches")
    status = str(body.get("status", ""))
    if not isinstance(breaches, list) or not status:
        return None
    return CheckVerdict(name, created.timestamp(), status, len(breaches))


def read_verdict(folder: Path | Location) -> CheckVerdict | None:
    """The verdict of the newest check report in ``folder`` (None: no report, or it cannot be read)."""
    path = newest_check_report(folder)
    if path is None:
        return None
    try:
        if isinstance(path, Path):
            body, name = json.loads(path.read_text()), path.name
        else:
            body, name = json.loads(as_location(folder).read_bytes(path)), path
    except (OSError, ValueError):
        return None
    return parse_verdict(name, body) if isinstance(body, dict) else None


class CheckReportCollector:
    """A Prometheus collector of the newest check verdict in ``folder``, re-read only when the folder changes."""

    def __init__(self, folder: Path | Location) -> None:
        remote = isinstance(folder, Location) and not folder.is_local
        self.location: Location | None = folder if remote else None
        self.folder = Path(folder.local if isinstance(folder, Location) and folder.is_local else
                           folder if not remote else ".")
        self._seen: int | None = None  # the folder's mtime (ns) when last read
        self._verdict: CheckVerdict | None = None
        self._listed_at = -REMOTE_RELIST_SECONDS

    def verdict(self) -> CheckVerdict | None:
        """The newest verdict (cached until the folder's mtime changes; on another filesystem, for
        ``REMOTE_RELIST_SECONDS``)."""
        if self.location is not None:
            now = time.monotonic()
            if now - self._listed_at >= REMOTE_RELIST_SECONDS:
                self._listed_at = now
                self._verdict = read_verdict(self.location)
            return self._verdict
        try:
            mtime = self.folder.stat().st_mtime_ns
        except OSError:
            self._seen, self._verdict = None, None
            return None
        if mtime != self._seen:
            self._verdict = read_verdict(self.folder)
            self._seen = mtime
        return self._verdict

    def describe(self) -> list[GaugeMetricFamily]:
        return list(_families())

    def collect(self) -> Iterator[GaugeMetricFamily]:
        breaches, timestamp, status = _families()
        v = self.verdict()
        if v is not None:
            breaches.add_metric([], v.breaches)
            timestamp.add_metric([], v.created_at)
            for s in dict.fromkeys((*STATUSES, v.status)):
                status.add_metric([s], 1.0 if s == v.status else 0.0)
        yield from (breaches, timestamp, status)


def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
    return (
        GaugeMetricFamily(BREACHES, "Breaches the newest `mlplatform monitor check` named (0: it passed); unset "
                          "while the reports folder holds no check report."),
        GaugeMetricFamily(TIMESTAMP, "When the newest `mlplatform monitor check` ran (Unix time)."),
        GaugeMetricFamily(STATUS, "1 for the newest `mlplatform monitor check`'s status (ok, breach, error, "
                          "nothing to check), 0 for the others.", labels=["status"]),
    )
