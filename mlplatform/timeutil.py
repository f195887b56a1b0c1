"""Time helpers used across the platform: everything is UTC, parsed and normalised in one place.

Times from people (every ``--since``/``--start``/``--end``/``--as-of`` option) are ISO-8601 (UTC if no zone is
given) or relative: ``now``, ``today`` (the start of today, UTC), ``yesterday`` (the start of yesterday), each
optionally followed by offsets such as ``-14d``, ``+12h``, ``-30m`` (w = weeks, d = days, h = hours, m = minutes,
s = seconds); offsets alone count from now (``-6h`` = ``now-6h``). So ``today-15d+12h`` is noon fifteen days ago.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from mlplatform.errors import InvalidInputError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


def utc(value: datetime | str | pd.Timestamp) -> pd.Timestamp:
    """``value`` as a tz-aware UTC Timestamp (a naive value is taken to be UTC)."""
    import pandas as pd

    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


_UNIT_SECONDS = {"w": 604_800, "d": 86_400, "h": 3_600, "m": 60, "s": 1}
_RELATIVE = re.compile(r"(now|today|yesterday)?((?:[+-]\d+(?:\.\d+)?[wdhms])*)", re.IGNORECASE)
_OFFSET = re.compile(r"([+-])(\d+(?:\.\d+)?)([wdhms])", re.IGNORECASE)


def parse_time(value: str | None, now: datetime | None = None) -> datetime | None:
    """A time from a user: ISO-8601 (UTC if no zone given) or relative (``today-14d``, ``now-6h``, ``-2d``), or
    None; a clear error if it is neither. ``now`` is the reference of relative times (default: the clock)."""
    if value is None:
        return None
    relative = relative_time(value, now)
    if relative is not None:
        return relative
    import pandas as pd

    try:
        parsed = utc(value)
        if parsed is pd.NaT:  # pandas reads "" as "not a time"
            raise ValueError("empty time")
        return parsed.to_pydatetime()
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(
            f"cannot read {value!r} as a time (use ISO-8601, e.g. 2026-10-29T00:00:00Z, or a relative time: "
            "now, today, yesterday, optionally with offsets such as today-14d, now-6h, -2d)"
        ) from exc


def parse_interval(value: str | None) -> timedelta | None:
    """A length of time from a user, in the offsets' units: ``1h``, ``15m``, ``1d``, ``1d12h`` (None stays None); a
    clear error if it is not one or not above zero."""
    if value is None:
        return None
    text = re.sub(r"\s+", "", str(value))
    parts = re.findall(r"(\d+(?:\.\d+)?)([wdhms])", text, flags=re.IGNORECASE)
    if not parts or "".join(a + u for a, u in parts).lower() != text.lower():
        raise InvalidInputError(f"cannot read {value!r} as a length of time (e.g. 1h, 15m, 1d, 1d12h)")
    length = timedelta(seconds=sum(float(a) * _UNIT_SECONDS[u.lower()] for a, u in parts))
    if length <= timedelta(0):
        raise InvalidInputError(f"{value!r} is no length of time above zero")
    return length


def relative_time(value: str, now: datetime | None = None) -> datetime | None:
    """``value`` as a relative time (``now``/``today``/``yesterday`` plus offsets like ``-14d+12h``), or None if it
    is not one. ``today`` is the start of the current UTC day."""
    text = re.sub(r"\s+", "", str(value))
    match = _RELATIVE.fullmatch(text)
    if not text or match is None:
        return None
    anchor, offsets = (match.group(1) or "now").lower(), match.group(2)
    current = now_utc() if now is None else _as_utc(now)
    base = {"now": current, "today": start_of_day(current), "yesterday": start_of_day(current) - timedelta(days=1)}
    when = base[anchor]
    for sign, amount, unit in _OFFSET.findall(offsets):
        delta = timedelta(seconds=float(amount) * _UNIT_SECONDS[unit.lower()])
        when = when + delta if sign == "+" else when - delta
    return when


def start_of_day(value: datetime) -> datetime:
    """Midnight (UTC) at the start of ``value``'s UTC day."""
    return _as_utc(value).replace(hour=0, minute=0, second=0, microsecond=0)


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def now_utc() -> datetime:
    """The current time, tz-aware UTC."""
    return datetime.now(UTC)
