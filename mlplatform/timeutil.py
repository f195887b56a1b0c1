"""Time helpers used across the platform: everything is UTC, parsed and normalised in one place."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from mlplatform.errors import InvalidInputError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


def utc(value: datetime | str | pd.Timestamp) -> pd.Timestamp:
    """``value`` as a tz-aware UTC Timestamp (a naive value is taken to be UTC)."""
    import pandas as pd

    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def parse_time(value: str | None) -> datetime | None:
    """An ISO-8601 time from a user (UTC if no zone given), or None; a clear error if it is not a time."""
    if value is None:
        return None
    try:
        return utc(value).to_pydatetime()
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(f"cannot read {value!r} as a time (use ISO-8601, e.g. 2026-10-29T00:00:00Z)") from exc


def now_utc() -> datetime:
    """The current time, tz-aware UTC."""
    return datetime.now(UTC)
