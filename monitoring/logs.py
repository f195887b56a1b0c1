"""Read what serving logged (the feature-log contract, mlplatform.contracts.feature_log): the served rows inside a
time window, chosen by when each row was logged.

Any logged row is survivable: rows monitoring cannot judge (no request id, a transaction time out of range, an
infinite amount, prediction or feature value, and a missing value in a column the check needs: ``require``,
e.g. ``CONSISTENCY_NEEDS``) are dropped and counted by reason, and log files that cannot be read (corrupt, a
required column missing, a column of the wrong type) are skipped and named; ``UnjudgedRows`` says what, for each
report's JSON and the check's headline. A NaN (null) feature value is not such a row: it is a missing value,
which the checks judge as one.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from mlplatform.contracts.feature_log import BASE_COLUMNS, UnreadableFile, log_files, read_logs
from mlplatform.errors import DataNotFoundError, InvalidInputError
from mlplatform.settings import Settings

CONSISTENCY_NEEDS = ("customer_id", "merchant_id", "transaction_ts")  # to recompute a request offline
QUALITY_NEEDS = ("transaction_ts", "model_version", "prediction")  # to join labels and score per version


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


@dataclass
class UnjudgedRows:
    """Logged rows of a window that monitoring could not judge, by reason, and the log files it could not read."""

    reasons: dict[str, int] = field(default_factory=dict)
    files: list[UnreadableFile] = field(default_factory=list)

    @property
    def rows(self) -> int:
        """Rows dropped from readable files."""
        return sum(self.reasons.values())

    @property
    def file_rows(self) -> int:
        """Rows in the unreadable files, where their footer says (unknown ones count 0)."""
        return sum(f.rows or 0 for f in self.files)

    def __bool__(self) -> bool:
        return bool(self.reasons or self.files)

    def describe(self) -> str:
        """One line for a headline ("" when every row could be judged)."""
        parts = []
        if self.reasons:
            detail = ", ".join(f"{why}: {n:,}" for why, n in sorted(self.reasons.items()))
            parts.append(f"{self.rows:,} logged row(s) could not be judged ({detail})")
        if self.files:
            rows = f", {self.file_rows:,} row(s)" if self.file_rows else ""
            parts.append(f"{len(self.files)} log file(s) could not be read{rows}")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "reasons": dict(sorted(self.reasons.items())),
                "unreadable_files": [f.to_dict() for f in self.files], "unreadable_file_rows": self.file_rows}


@dataclass
class ServedRows:
    """The judgeable served rows of a window and what could not be judged."""

    frame: pd.DataFrame
    unjudged: UnjudgedRows


def screen_rows(frame: pd.DataFrame, require: tuple[str, ...] = ()) -> tuple[pd.DataFrame, dict[str, int]]:
    """``frame`` without the rows monitoring cannot judge, and how many were dropped per reason (the first reason
    that applies to a row). Only the columns ``frame`` has are checked: always a missing ``request_id``, a
    ``transaction_ts`` that is no time (out of range), an infinite amount, prediction or feature value; and a
    missing (null or NaN) value in the columns of ``require``."""
    bad = pd.Series(False, index=frame.index)
    reasons: Counter[str] = Counter()

    def drop(mask, why: str) -> None:
        nonlocal bad
        new = pd.Series(np.asarray(mask, dtype=bool), index=frame.index) & ~bad
        if new.any():
            reasons[why] += int(new.sum())
            bad |= new

    def numbers(name: str) -> np.ndarray:
        return pd.to_numeric(frame[name], errors="coerce").astype("float64").to_numpy()

    for name in [c for c in require if c in frame]:
        drop(frame[name].isna().to_numpy(), f"{name} missing")
    if "request_id" in frame:
        drop(frame["request_id"].isna().to_numpy(), "request_id missing")
    if "transaction_ts" in frame:
        seconds = pd.to_numeric(frame["transaction_ts"], errors="coerce")
        when = pd.to_datetime(seconds, unit="s", utc=True, errors="coerce")
        drop((when.isna() & seconds.notna()).to_numpy(), "transaction_ts out of range")
    for name in ("prediction", "amount"):
        if name in frame:
            drop(np.isinf(numbers(name)), f"{name} infinite")
    for name in [c for c in frame.columns if c not in BASE_COLUMNS]:  # model inputs: null is a missing value
        drop(np.isinf(numbers(name)), "infinite feature value")
    return frame[~bad.to_numpy()], dict(reasons)


def served_rows(settings: Settings, window: LogWindow, columns: list[str] | None = None,
                require: tuple[str, ...] = ()) -> ServedRows:
    """Served rows (one per request, shadows excluded) logged inside ``window`` that monitoring can judge (see
    ``screen_rows``; ``require``: columns a row must have a value in), and what it could not; EmptyLogWindow if no
    judgeable row is left."""
    root = settings.layout.feature_logs_dir
    files = log_files(root, window.start, window.end)
    read = read_logs(files, columns)
    frame = read.frame
    reasons: dict[str, int] = {}
    if len(frame):
        logged = pd.to_datetime(frame["logged_at"], utc=True, errors="coerce")
        served = frame["served"].fillna(False).astype(bool)
        timeless = int((logged.isna() & served).sum())
        inside = (logged >= pd.Timestamp(window.start)) & (logged < pd.Timestamp(window.end))
        frame = frame[inside.fillna(False).astype(bool) & served]
        frame, reasons = screen_rows(frame, require)
        if timeless:
            reasons["logged_at missing or out of range"] = timeless
        frame = frame.drop_duplicates("request_id", keep="first").reset_index(drop=True)
    unjudged = UnjudgedRows(reasons, read.unreadable)
    if frame.empty:
        where = f"{len(files)} log file(s) near that window" if files else "no log files for those days"
        also = f"; {unjudged.describe()}" if unjudged else ""
        raise EmptyLogWindow(
            f"no served requests were logged in {window.describe()} under {root} ({where}{also}). "
            "Send traffic to the service first, or widen the window with --since/--until "
            "(or MLPLATFORM_MONITORING_WINDOW_DAYS)."
        )
    frame.attrs["unjudged"] = unjudged
    return ServedRows(frame, unjudged)


def read_served(settings: Settings, window: LogWindow, columns: list[str] | None = None,
                require: tuple[str, ...] = ()) -> pd.DataFrame:
    """Served rows (one per request, shadows excluded) logged inside ``window``; EmptyLogWindow if there are none.
    Rows and files that cannot be judged are left out; ``unjudged_of(frame)`` says which."""
    return served_rows(settings, window, columns, require).frame


def unjudged_of(frame: pd.DataFrame) -> UnjudgedRows:
    """What ``read_served`` left out of ``frame`` (empty for a frame it did not read)."""
    found = frame.attrs.get("unjudged")
    return found if isinstance(found, UnjudgedRows) else UnjudgedRows()
