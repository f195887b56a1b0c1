"""Read online features and push fresh events, through the same Feast objects serving uses.

A push's rows (``push_frame``) are checked against the columns of the views the push source feeds before anything
is written: each value must be of its column's Feast type (below), join keys and the event time must be present in
every row, feature values may be null (Feast stores them as missing). A column no view of the push source has is
refused, not ignored: Feast hands the whole frame to Arrow (an unknown column of mixed values fails there), an
offline push requires exactly the batch source's columns, and a misspelt optional column (``created_timestamp``)
would otherwise vanish without a word.

=======================  ==============================================================================
Feast type               a pushed value (JSON)
=======================  ==============================================================================
Int64 / Int32            an integer within the type's signed range (a number like ``3.0`` counts as 3)
Float64 / Float32        a finite number (Float32: within float32's range)
String                   a string
Bool                     ``true`` or ``false``
anything else            not taken by a push (the push source is refused as a whole)
=======================  ==============================================================================

Never a string for a number or a boolean for either (JSON ``true`` is not 1).
"""

from __future__ import annotations

import math
import numbers
import re
import sys
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from mlplatform.errors import DefinitionError, InvalidInputError
from mlplatform.settings import Settings
from mlplatform.stores import open_feature_store, redis_errors, require_redis


def read_online(
    settings: Settings, rows: list[dict], feature_service: str | None = None, store=None
) -> pd.DataFrame:
    """Online features of the model's feature service for ``rows`` (entity keys plus request fields)."""
    require_redis(settings)
    store = store or open_feature_store(settings)
    service = store.get_feature_service(feature_service or settings.feature_service)
    with redis_errors(settings.redis_addr, "did not answer the read", settings.redis_timeout_seconds):
        return store.get_online_features(features=service, entity_rows=rows).to_df()


MAX_UNIX_SECONDS = 9.2e9  # pandas' nanosecond timestamps end in 2262 (and start in 1677)


def to_event_times(values: pd.Series, column: str) -> pd.Series:
    """Unix seconds or ISO-8601 strings (mixed is fine) as UTC timestamps; a value that is not a time pandas can
    hold (years 1677-2262) is an InvalidInputError naming ``rows[i].<column>``. Nulls stay NaT."""
    is_num = values.map(lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool | np.bool_)).astype(bool)
    is_str = values.map(lambda v: isinstance(v, str)).astype(bool)
    out = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")
    if is_num.any():
        seconds = pd.to_numeric(values[is_num])
        in_range = seconds.abs().lt(MAX_UNIX_SECONDS)  # also false for inf and NaN
        out[seconds[in_range].index] = pd.to_datetime(seconds[in_range], unit="s", utc=True)
    if is_str.any():
        out[is_str] = pd.to_datetime(values[is_str], format="ISO8601", utc=True, errors="coerce")
    bad = (out.isna() & values.notna()).to_numpy()
    if bad.any():
        i = int(bad.argmax())
        shown = repr(values.iloc[i]) if isinstance(values.iloc[i], str) else str(values.iloc[i])
        raise InvalidInputError(
            f"rows[{i}].{column}: {shown} is not a time (ISO-8601 or unix seconds, years 1677-2262)"
        )
    return out


def check_event_times(frame: pd.DataFrame, columns: Iterable[str], now: datetime, max_skew_seconds: float) -> None:
    """Refuse missing times and times later than ``now + max_skew_seconds`` in ``columns`` (UTC timestamps) with an
    InvalidInputError naming ``rows[i].<column>``: Feast keeps an entity's newest row, so one event from the
    future would make every later write of that entity look older and be skipped (materialize --full included)."""
    now_utc = pd.Timestamp(now).tz_convert("UTC")
    limit = now_utc + pd.Timedelta(seconds=max_skew_seconds)
    for column in columns:
        if column not in frame.columns:
            continue
        values = frame[column]
        missing = values.isna().to_numpy()
        if missing.any():
            i = int(missing.argmax())
            raise InvalidInputError(f"rows[{i}].{column}: missing; every row needs a time")
        late = (values > limit).to_numpy()
        if late.any():
            i = int(late.argmax())
            raise InvalidInputError(
                f"rows[{i}].{column}: {values.iloc[i].isoformat()} is more than {max_skew_seconds:g} s ahead of the "
                f"server's clock ({now_utc:%Y-%m-%dT%H:%M:%SZ}; "
                f"{int(late.sum())} of {len(values)} rows): events cannot come from the future "
                "(MLPLATFORM_SERVING_MAX_CLOCK_SKEW); nothing was written"
            )


INT_RANGES = {"INT64": (-(2**63), 2**63 - 1), "INT32": (-(2**31), 2**31 - 1)}  # Feast value type: bounds
FLOAT_MAX = {"DOUBLE": sys.float_info.max, "FLOAT": float(np.finfo(np.float32).max)}
PUSHABLE = {"INT64": "an integer (int64)", "INT32": "an integer (int32)", "DOUBLE": "a finite number",
            "FLOAT": "a finite number (float32)", "STRING": "a string", "BOOL": "true or false"}
EXACT_INT = 2**53  # integers a float64 holds exactly: Feast reads an integer column holding a null as float64
_COLUMN_NAME = re.compile(r"[A-Za-z_]\w*")  # a name the error's ``rows[i].<column>`` field can carry


def _json_kind(value: Any) -> str:
    """What ``value`` is, in JSON's words (the value itself is not echoed)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, numbers.Integral):
        return "an integer"
    if isinstance(value, numbers.Real):
        return "a number"
    for kind, name in ((str, "a string"), (list, "a list"), (dict, "an object")):
        if isinstance(value, kind):
            return name
    return type(value).__name__


def _shown(value: Any, width: int = 40) -> str:
    """``value`` as shown in an error: its repr, cut to ``width`` characters."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def push_value(value: Any, value_type: str) -> Any:
    """A non-null JSON ``value`` as a column of Feast value type ``value_type`` (``INT64``, ``DOUBLE``, ...) takes
    it: an int, a float, a str or a bool; ValueError saying what is wrong otherwise."""
    wrong = ValueError(f"must be {PUSHABLE[value_type]}, got {_json_kind(value)}")
    if isinstance(value, bool) or not isinstance(value, numbers.Real | str):
        if value_type == "BOOL" and isinstance(value, bool):
            return value
        raise wrong
    if value_type in INT_RANGES:
        if isinstance(value, float):
            if not math.isfinite(value) or not value.is_integer():
                raise ValueError(f"must be {PUSHABLE[value_type]}, got {_shown(value)}")
            value = int(value)
        if not isinstance(value, numbers.Integral):
            raise wrong
        low, high = INT_RANGES[value_type]
        if not low <= value <= high:
            raise ValueError(f"{_shown(value)} is outside {value_type.lower()} ({low} to {high})")
        return int(value)
    if value_type in FLOAT_MAX:
        if isinstance(value, str):
            raise wrong
        try:
            number = float(value)
        except OverflowError:  # an integer too large for any float
            number = math.inf
        if not math.isfinite(number) or abs(number) > FLOAT_MAX[value_type]:
            raise ValueError(f"must be {PUSHABLE[value_type]}, got {_shown(value)}")
        return number
    if value_type == "STRING" and isinstance(value, str):
        return value
    raise wrong


def _cell(i: int, column: str) -> str:
    """The error's field for row ``i``'s ``column`` (the row alone when the name cannot be a field name)."""
    return f"rows[{i}].{column}" if _COLUMN_NAME.fullmatch(column) else f"rows[{i}]"


def _typed(values: list[Any], value_type: str) -> Any:
    """A column of checked values (None: null) in the dtype Arrow reads as ``value_type``."""
    if value_type in INT_RANGES:
        return pd.array(values, dtype="Int64")
    if value_type in FLOAT_MAX:
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    if value_type == "BOOL":
        return pd.array(values, dtype="boolean")
    return pd.Series(values, dtype=object)


def push_frame(rows: Sequence[Mapping[str, Any]], columns: Mapping[str, str], join_keys: Collection[str],
               event_time: str, created_time: str | None, source: str) -> pd.DataFrame:
    """The rows of a push to ``source`` as a frame Feast can write: ``columns`` (name: Feast value type, join keys
    and features) checked and typed, the time columns as given (``to_event_times`` reads them). InvalidInputError
    naming ``rows[i].<column>`` and the problem (and how many other values are bad) if a value does not fit its
    column, a join key is null, or a row has a column ``source`` does not take; ``rows: ...`` if a column is absent
    from every row. Pure: nothing is read or written."""
    unsupported = sorted(f"{c} ({t})" for c, t in columns.items() if t not in PUSHABLE)
    if unsupported:
        raise InvalidInputError(f"push_source: {source!r} has columns of a type a push cannot carry: "
                                f"{', '.join(unsupported)}")
    times = [event_time] + ([created_time] if created_time and created_time != event_time else [])
    seen = {name for row in rows for name in row}
    absent = sorted((set(columns) | {event_time}) - seen)
    if absent:
        raise InvalidInputError(f"rows: every row needs {', '.join(absent)} for push source {source!r}")
    known = set(columns) | set(times)
    problems: list[str] = []
    values: dict[str, list[Any]] = {c: [] for c in columns}
    for i, row in enumerate(rows):
        for name in row:
            if name not in known:
                what = "not" if _COLUMN_NAME.fullmatch(name) else f"{_shown(name)} is not"
                problems.append(f"{_cell(i, name)}: {what} a column of push source {source!r} (it takes "
                                f"{', '.join(sorted(known))})")
        for column, value_type in columns.items():
            value = row.get(column)
            if value is None and column in join_keys:
                problems.append(f"{_cell(i, column)}: missing; every row needs its join key")
            elif value is not None:
                try:
                    value = push_value(value, value_type)
                except ValueError as exc:
                    problems.append(f"{_cell(i, column)}: {exc}")
            values[column].append(value)
    if not problems:  # Feast reads an integer column holding a null as float64: only +-2^53 stay exact
        for column in (c for c, t in columns.items() if t in INT_RANGES):
            if None in values[column]:
                big = [i for i, v in enumerate(values[column]) if v is not None and abs(v) > EXACT_INT]
                problems += [f"{_cell(i, column)}: {_shown(values[column][i])} is beyond +-2^53, which cannot be "
                             "pushed together with a null in the same column; push those rows apart" for i in big]
    if problems:
        more = f" (and {len(problems) - 1} more bad values)" if len(problems) > 1 else ""
        raise InvalidInputError(f"{problems[0]}{more}; nothing was written")
    frame = pd.DataFrame({c: _typed(v, columns[c]) for c, v in values.items()}, index=pd.RangeIndex(len(rows)))
    for column in (t for t in times if t in seen):  # an absent optional time stays absent
        frame[column] = pd.Series([row.get(column) for row in rows], dtype=object)
    return frame


def push_columns(views: Iterable[Any]) -> tuple[dict[str, str], set[str]]:
    """The columns a push to ``views`` (Feast feature views sharing a push source) writes, each with the Feast
    value type its view declares (``INT64``, ``DOUBLE``...: join keys as Feast types them, from the entity), and
    which are join keys. A column two views type differently is a DefinitionError."""
    columns: dict[str, str] = {}
    keys: set[str] = set()
    for view in views:
        for field, is_key in [(f, True) for f in view.entity_columns] + [(f, False) for f in view.features]:
            value_type = field.dtype.to_value_type().name
            if columns.setdefault(field.name, value_type) != value_type:
                raise DefinitionError(f"push_source: its views disagree on the type of {field.name} "
                                      f"({columns[field.name]} and {value_type}); fix the feature definitions")
            if is_key:
                keys.add(field.name)
    return columns, keys


def push_event(settings: Settings, customer_id: int, amount: float, merchant_id: int,
               when: datetime | None = None, store=None) -> None:
    """Push one fresh event to ``customer_realtime`` (online store only); a time in the future is refused."""
    from feast.data_source import PushMode

    ts = pd.Timestamp(when or datetime.now(UTC))
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    frame = pd.DataFrame(
        {
            "customer_id": [customer_id],
            "last_amount": [float(amount)],
            "last_merchant_id": [merchant_id],
            "event_timestamp": [ts],
            "created_timestamp": [ts],
        }
    )
    check_event_times(frame, ["event_timestamp"], datetime.now(UTC), settings.serving_max_clock_skew)
    require_redis(settings)
    store = store or open_feature_store(settings)
    with redis_errors(settings.redis_addr, "did not accept the push", settings.redis_timeout_seconds):
        store.push("customer_realtime_push", frame, to=PushMode.ONLINE)
