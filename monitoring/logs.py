"""Read what serving logged (the feature-log contract, mlplatform.contracts.feature_log): the served rows inside a
time window, chosen by when each row was logged.

Any logged row is survivable: rows monitoring cannot judge (no request id, no ``served`` flag, a transaction time
out of range, an infinite amount, prediction or feature value, a missing value in a column the check needs:
``require``, e.g. ``CONSISTENCY_NEEDS``; and a request logged twice, whose first row is kept) are dropped and
counted by reason, and log files that cannot be read (corrupt, a required column missing, a column of the wrong
type) are skipped and named; ``UnjudgedRows`` says what, for each report's JSON and page and the check's headline.
A NaN (null) feature value is not such a row: it is a missing value, which the checks judge as one.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from mlplatform.contracts.feature_log import BASE_COLUMNS, UnreadableFile, filesystem_of, log_files, read_logs
from mlplatform.errors import DataNotFoundError, InvalidInputError
from mlplatform.filesystems import feature_logs_location
from mlplatform.settings import Settings

CONSISTENCY_NEEDS = ("customer_id", "merchant_id", "transaction_ts")  # to recompute a request offline
QUALITY_NEEDS = ("transaction_ts", "model_name", "model_version", "prediction")  # to join labels, score per version
CHECK_NEEDS = tuple(dict.fromkeys(CONSISTENCY_NEEDS + QUALITY_NEEDS))  # a row every part of `monitor check` can judge
DUPLICATE = "request_id logged more than once (first kept)"
ABSOLUTE_PATH = re.compile(r"(?<![\w.=])/[^\s'\"]*")  # kept out of reports the service shows


class EmptyLogWindow(DataNotFoundError):
    """No served request was logged in the chosen window, or none that could be judged (``unjudged`` says why)."""

    def __init__(self, message: str, unjudged: UnjudgedRows | None = None) -> None:
        super().__init__(message)
        self.unjudged = unjudged if unjudged is not None else UnjudgedRows()


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
    """Logged rows of a window that monitoring could not judge, by reason, and the log files it could not read.

    ``logged``: the served rows of the window in the readable files, before any was dropped (rows whose
    ``logged_at`` or ``served`` is unknown included: they are counted as reasons too)."""

    reasons: dict[str, int] = field(default_factory=dict)
    files: list[UnreadableFile] = field(default_factory=list)
    logged: int = 0

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
        """One line for a headline ("" when every row could be judged), e.g. "3 of 4,210 logged row(s) could not
        be judged (transaction_ts out of range: 2, infinite feature value: 1)"."""
        parts = []
        if self.reasons:
            detail = ", ".join(f"{why}: {n:,}" for why, n in sorted(self.reasons.items()))
            parts.append(f"{self.rows:,} of {self.logged:,} logged row(s) could not be judged ({detail})")
        if self.files:
            rows = f", {self.file_rows:,} row(s)" if self.file_rows else ""
            parts.append(f"{len(self.files)} log file(s) could not be read{rows}")
        return "; ".join(parts)

    def short(self) -> str:
        """A few words for a part's headline ("" when every row could be judged)."""
        parts = [f"{self.rows:,} of {self.logged:,} logged rows not judged"] if self.reasons else []
        if self.files:
            parts.append(f"{len(self.files)} log file(s) unreadable")
        return ", ".join(parts)

    def table(self) -> list[dict[str, Any]]:
        """Rows for a report page: one per reason, then one per unreadable file."""
        out: list[dict[str, Any]] = [{"reason": why, "rows": n} for why, n in sorted(self.reasons.items())]
        out += [{"reason": f"log file could not be read: {_reason(f)}", "rows": f.rows, "file": _file_name(f.path)}
                for f in self.files]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"logged": self.logged, "rows": self.rows, "reasons": dict(sorted(self.reasons.items())),
                "unreadable_files": [{**f.to_dict(), "path": _file_name(f.path), "reason": _reason(f)}
                                     for f in self.files],
                "unreadable_file_rows": self.file_rows, "summary": self.describe() or None}


def _file_name(path) -> str:
    """A log file as ``date=YYYY-MM-DD/part-....parquet``: enough to find it, no absolute path in a report."""
    return f"{path.parent.name}/{path.name}"


def _reason(file: UnreadableFile) -> str:
    """Why ``file`` could not be read, without absolute paths (a reader's error may quote one, maybe cut short)."""
    text = file.reason.replace(f"{file.path.parent.parent}/", "")
    return ABSOLUTE_PATH.sub("<path>", text)


@dataclass
class ServedRows:
    """The judgeable served rows of a window and what could not be judged."""

    frame: pd.DataFrame
    unjudged: UnjudgedRows
    files: int = 0  # log files near the window that were read or tried


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


def screen_window(settings: Settings, window: LogWindow, columns: list[str] | None = None,
                  require: tuple[str, ...] = ()) -> ServedRows:
    """Served rows (one per request, shadows excluded) logged inside ``window`` that monitoring can judge (see
    ``screen_rows``; ``require``: columns a row must have a value in), and what it could not; may be empty."""
    root = feature_logs_location(settings.layout)  # MLPLATFORM_FEATURE_LOGS_URI, or <data_dir>/feature_logs
    files = log_files(root, window.start, window.end)
    read = read_logs(files, columns, filesystem_of(root))
    frame = read.frame
    reasons: dict[str, int] = {}
    logged = 0
    if len(frame):
        when = pd.to_datetime(frame["logged_at"], utc=True, errors="coerce")
        served = frame["served"]
        known = served.notna().to_numpy()
        served = served.where(known, False).astype(bool).to_numpy()
        inside = ((when >= pd.Timestamp(window.start)) & (when < pd.Timestamp(window.end))).fillna(False)
        inside = inside.astype(bool).to_numpy()
        timeless = int((when.isna().to_numpy() & served).sum())  # logged when? cannot tell if inside the window
        unflagged = int((inside & ~known).sum())  # inside, but the answer or a shadow? cannot tell
        frame = frame[inside & served]
        logged = len(frame) + timeless + unflagged
        frame, reasons = screen_rows(frame, require)
        if timeless:
            reasons["logged_at missing or out of range"] = timeless
        if unflagged:
            reasons["served missing"] = unflagged
        before = len(frame)
        frame = frame.drop_duplicates("request_id", keep="first").reset_index(drop=True)
        if len(frame) < before:
            reasons[DUPLICATE] = before - len(frame)
    unjudged = UnjudgedRows(reasons, read.unreadable, logged)
    frame.attrs["unjudged"] = unjudged
    return ServedRows(frame, unjudged, len(files))


def served_rows(settings: Settings, window: LogWindow, columns: list[str] | None = None,
                require: tuple[str, ...] = ()) -> ServedRows:
    """``screen_window``, and EmptyLogWindow (naming what could not be judged) if no judgeable row is left."""
    found = screen_window(settings, window, columns, require)
    if found.frame.empty:
        root = feature_logs_location(settings.layout).show()  # a URI without credentials
        where = f"{found.files} log file(s) near that window" if found.files else "no log files for those days"
        also = f"; {found.unjudged.describe()}" if found.unjudged else ""
        what = (f"none of the {found.unjudged.logged:,} served requests logged in {window.describe()} could be "
                "judged" if found.unjudged.logged else f"no served requests were logged in {window.describe()}")
        raise EmptyLogWindow(
            f"{what} under {root} ({where}{also}). "
            "Send traffic to the service first, or widen the window with --since/--until "
            "(or MLPLATFORM_MONITORING_WINDOW_DAYS).", found.unjudged)
    return found


def read_served(settings: Settings, window: LogWindow, columns: list[str] | None = None,
                require: tuple[str, ...] = ()) -> pd.DataFrame:
    """Served rows (one per request, shadows excluded) logged inside ``window``; EmptyLogWindow if there are none.
    Rows and files that cannot be judged are left out; ``unjudged_of(frame)`` says which."""
    return served_rows(settings, window, columns, require).frame


def unjudged_of(frame: pd.DataFrame) -> UnjudgedRows:
    """What ``read_served`` left out of ``frame`` (empty for a frame it did not read)."""
    found = frame.attrs.get("unjudged")
    return found if isinstance(found, UnjudgedRows) else UnjudgedRows()
