"""Read what serving logged (the feature-log contract, mlplatform.contracts.feature_log): the served rows inside a
time window, chosen by when each row was logged."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pandas as pd

from mlplatform.contracts.feature_log import log_files, read_log_files
from mlplatform.errors import DataNotFoundError, InvalidInputError
from mlplatform.settings import Settings


class EmptyLogWindow(DataNotFoundError):
    """No served request was logged in the chosen window."""


@dataclass(frozen=True)
class LogWindow:
    """Rows logged at ``start <= logged_at < end``."""

    start: datetime
    end: datetime

    def describe(self) -> str:
        return f"{self.start:%Y-%m-%d %H:%M}Z .. {self.end:%Y-%m-%d %H:%M}Z"

    def to_dict(self) -> dict[str, str]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat()}


def resolve_window(settings: Settings, since: datetime | None = None, until: datetime | None = None,
                   now: datetime | None = None) -> LogWindow:
    """The window [since, until): ``until`` defaults to now, ``since`` to ``monitoring_window_days`` before it."""
    end = until or now or datetime.now(UTC)
    start = since or end - timedelta(days=settings.monitoring_window_days)
    if start >= end:
        raise InvalidInputError(f"--since ({start:%Y-%m-%d %H:%M}Z) must be before --until ({end:%Y-%m-%d %H:%M}Z)")
    return LogWindow(start, end)


def read_served(settings: Settings, window: LogWindow, columns: list[str] | None = None) -> pd.DataFrame:
    """Served rows (one per request, shadows excluded) logged inside ``window``; EmptyLogWindow if there are none."""
    root = settings.layout.feature_logs_dir
    files = log_files(root, window.start, window.end)
    frame = read_log_files(files, columns)
    if len(frame):
        logged = pd.to_datetime(frame["logged_at"], utc=True)
        inside = (logged >= pd.Timestamp(window.start)) & (logged < pd.Timestamp(window.end))
        frame = frame[inside & frame["served"].fillna(False).astype(bool)]
        frame = frame.drop_duplicates("request_id", keep="first").reset_index(drop=True)
    if frame.empty:
        where = f"{len(files)} log file(s) near that window" if files else "no log files for those days"
        raise EmptyLogWindow(
            f"no served requests were logged in {window.describe()} under {root} ({where}). "
            "Send traffic to the service first, or widen the window with --since/--until "
            "(or MLPLATFORM_MONITORING_WINDOW_DAYS)."
        )
    return frame
