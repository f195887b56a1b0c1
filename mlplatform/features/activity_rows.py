"""Feast's ``customer_activity`` online row as of a customer's newest event, from its event log.

Feast knows ``customer_activity`` as a batch FeatureView (``feature_repo/views.py``): its online row for a customer
is whatever ``mlplatform materialize`` last wrote. The stream consumer keeps that row fresh: after each batch, for
every customer the batch touched, it writes the row as of the newest event E in the customer's log. The offline
row at a transaction's own time T = E describes the windows (T − w, T], the transaction included
(``mlplatform.features.pipelines``), which is ``aggregate`` at t = E + 1 µs (``mlplatform.features.activity``).

E and the events of the row's windows are read in one atomic step (``READ_ROWS``), so a late event (older than E)
is counted in the row at E, and a newer event applied meanwhile by another consumer is that consumer's row. The
row is written only where the logs hold everything it counts (``row_covered``: complete since before its 7-day
window), encoded byte for byte as Feast and the fast materializer encode it (``encode_rows``: Feast's Redis layout,
``_ts:customer_activity`` = E), and only when the stored row is not newer (``WRITE_IF_NOT_NEWER``: per key, the
check and the write are one step of a Lua script, so no writer slips in between). A stored row at the same instant
E is replaced: it is the same row, and the log may have gained a late event since it was written.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from hashlib import sha1
from typing import Any

import numpy as np
import pyarrow as pa

from mlplatform.contracts.activity_log import COVERAGE_KEY, coverage_fields, decode_member, log_key
from mlplatform.contracts.redis_layout import timestamp_field
from mlplatform.features.activity import ACTIVITY_VIEW, FEATURES, WINDOWS_US, aggregate
from mlplatform.features.fast_materialize import (
    ENCODERS,
    VT_DOUBLE,
    VT_INT64,
    encode_entity_keys,
    encode_timestamps,
    split_timestamps,
)
from mlplatform.features.redis_routing import is_cluster, slot_runs

JOIN_KEY = "customer_id"  # the customer entity's join key (feature_repo/entities.py), Int64
# the view's schema in feature_repo/views.py: Feast's value type of each feature
FEATURE_TYPES = {name: VT_DOUBLE if name.startswith("amount_") else VT_INT64 for name in FEATURES}
_ARROW_TYPES = {VT_INT64: pa.int64(), VT_DOUBLE: pa.float64()}
TS_FIELD = timestamp_field(ACTIVITY_VIEW).encode()


def feature_field_bytes(view_name: str, feature: str) -> bytes:
    """``redis_layout.feature_field`` (Feast's ``_mmh3("<view>:<feature>")``: murmur3 32-bit, little-endian)
    without importing Feast, which would add seconds to the consumer's start (a test pins the two equal)."""
    import mmh3

    return struct.pack("<I", mmh3.hash(f"{view_name}:{feature}", signed=False))


FEATURE_FIELDS = tuple(feature_field_bytes(ACTIVITY_VIEW, name) for name in FEATURES)


@dataclass(frozen=True)
class ActivityRow:
    """A customer's ``customer_activity`` row: its event time (µs, the newest event counted) and the features."""

    customer_id: int
    ts_us: int
    features: Mapping[str, Any]


@dataclass(frozen=True)
class FeastRow:
    """One row in Feast's Redis layout: the entity's key, the ``_ts`` Timestamp bytes (and its seconds and nanos,
    which the write script compares), and each feature's ValueProto bytes in ``FEATURES`` order."""

    key: bytes
    ts: bytes
    seconds: int
    nanos: int
    values: tuple[bytes, ...]


def row_covered(complete_from: int | None, ts_us: int) -> bool:
    """Whether the logs, complete from ``complete_from`` µs (None: not loaded), hold every event the row at
    ``ts_us`` counts: the events of its 7-day window, ``ts − 7 d < e ≤ ts``."""
    return complete_from is not None and ts_us + 1 - WINDOWS_US["7d"] >= complete_from


def touched_customers(events: Iterable[Any]) -> list[int]:
    """The customers of ``events`` (``TransactionEvent``s), each once, in order."""
    return sorted({e.customer_id for e in events})


CHUNK = 100  # keys per script call: each call holds Redis for well under a millisecond

# KEYS: customers' event logs; ARGV[1]: the longest window (µs). Per log, its newest event E and the events of
# [E + 1 − window, E] (what ``queue_reads`` reads at t = E + 1), read atomically: {} for an empty log (or a key of
# another type), else {E, member, score, member, score, ...}. Scores are µs below 2^53: exact in Lua's doubles.
READ_ROWS = """
local w = tonumber(ARGV[1])
local out = {}
for k = 1, #KEYS do
  local top = redis.pcall('ZREVRANGE', KEYS[k], 0, 0, 'WITHSCORES')
  if top.err or #top == 0 then
    out[k] = {}
  else
    local r = redis.call('ZRANGEBYSCORE', KEYS[k], string.format('%.0f', tonumber(top[2]) + 1 - w), top[2],
                         'WITHSCORES')
    table.insert(r, 1, top[2])
    out[k] = r
  end
end
return out
"""
READ_SHA = sha1(READ_ROWS.encode()).hexdigest()


def queue_row_reads(pipe: Any, project: str, customers: Sequence[int]) -> None:
    """Queue the reads ``rows_from_replies`` needs: the logs' coverage, then per customer its newest event and the
    events of its row's windows (``READ_ROWS`` by its SHA, ``CHUNK`` logs a call: load it with ``SCRIPT LOAD``).

    On a Redis Cluster pipeline a call takes only consecutive logs of one hash slot (a script's keys must share
    one): mostly one log a call, each sent to its master by the pipeline; the replies flatten the same way."""
    pipe.hget(COVERAGE_KEY, coverage_fields(project)[0])
    keys = [log_key(project, c) for c in customers]
    for run in slot_runs(keys, CHUNK, is_cluster(pipe)):
        chunk = keys[run.start:run.stop]
        pipe.execute_command("EVALSHA", READ_SHA, len(chunk), *chunk, WINDOWS_US["7d"])


def rows_from_replies(replies: Sequence[Any], customers: Sequence[int]) -> tuple[list[ActivityRow], int]:
    """(rows, uncovered) from the replies of ``queue_row_reads``: each customer's row as of its log's newest event
    E, ``aggregate`` at t = E + 1 µs; an empty log gives none, and a row the logs do not cover (``row_covered``)
    none either: it is counted in ``uncovered``."""
    complete_from = None if replies[0] is None else int(replies[0])
    logs = [log for chunk in replies[1:] for log in chunk]
    rows, uncovered = [], 0
    for customer, log in zip(customers, logs, strict=True):
        if not log:
            continue
        ts_us = int(float(log[0]))
        if not row_covered(complete_from, ts_us):
            uncovered += 1
            continue
        events = []
        for k in range(1, len(log), 2):
            _, merchant, amount = decode_member(log[k])
            events.append((int(float(log[k + 1])), merchant, amount))
        rows.append(ActivityRow(customer, ts_us, aggregate(events, ts_us, ts_us + 1)))
    return rows, uncovered


def encode_rows(project: str, rows: Sequence[ActivityRow]) -> list[FeastRow]:
    """The rows in Feast's Redis layout, byte for byte as Feast (and the fast materializer) writes them: entity
    key serialization v3 + project, a protobuf Timestamp of the row's time, one ValueProto per feature."""
    if not rows:
        return []
    ids = pa.chunked_array([pa.array([r.customer_id for r in rows], pa.int64())])
    keys = encode_entity_keys({JOIN_KEY: ids}, {JOIN_KEY: VT_INT64}, project)
    micros = np.array([r.ts_us for r in rows], np.int64)
    stamps = encode_timestamps(micros)
    seconds, nanos = split_timestamps(micros)
    columns = []
    for name in FEATURES:
        vtype = FEATURE_TYPES[name]
        col = pa.chunked_array([pa.array([r.features[name] for r in rows], _ARROW_TYPES[vtype])])
        columns.append(ENCODERS[vtype](col))
    values = zip(*columns, strict=True)
    return [FeastRow(*fields) for fields in zip(keys, stamps, seconds.tolist(), nanos.tolist(), values, strict=True)]


# KEYS: entities' hashes; ARGV: the _ts field, the number n of features, their n fields, then per key its row's
# Timestamp bytes, seconds, nanos and n values. Per key, the stored _ts (a protobuf Timestamp: tag 0x08 seconds,
# tag 0x10 nanos, varints) is decoded and the row written unless that is newer, in one atomic step. Replies per
# key: 1 written, 0 kept (the stored row is newer), -1 refused (a key of another type). A stored _ts that does not
# parse is no newer row: it is replaced.
WRITE_IF_NOT_NEWER = """
local nf = tonumber(ARGV[2])
local out = {}
for k = 1, #KEYS do
  local base = 2 + nf + (k - 1) * (3 + nf)
  local stored = redis.pcall('HGET', KEYS[k], ARGV[1])
  local newer = false
  if type(stored) == 'table' then
    out[k] = -1
  else
    if stored then
      local s, n, i, ok = 0, 0, 1, true
      while ok and i <= #stored do
        local tag = string.byte(stored, i)
        i = i + 1
        local v, mul, b = 0, 1, 128
        while b and b >= 128 do
          b = string.byte(stored, i)
          i = i + 1
          if b then v = v + (b % 128) * mul; mul = mul * 128 end
        end
        if not b then ok = false elseif tag == 8 then s = v elseif tag == 16 then n = v end
      end
      local ns, nn = tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3])
      newer = ok and (s > ns or (s == ns and n > nn))
    end
    if newer then
      out[k] = 0
    else
      local args = {ARGV[1], ARGV[base + 1]}
      for j = 1, nf do
        args[#args + 1] = ARGV[2 + j]
        args[#args + 1] = ARGV[base + 3 + j]
      end
      redis.call('HSET', KEYS[k], unpack(args))
      out[k] = 1
    end
  end
end
return out
"""
WRITE_SHA = sha1(WRITE_IF_NOT_NEWER.encode()).hexdigest()
SCRIPTS = (READ_ROWS, WRITE_IF_NOT_NEWER)  # what ``SCRIPT LOAD`` must hold for the SHAs above


def queue_writes(pipe: Any, rows: Sequence[FeastRow]) -> None:
    """Queue the writes of ``rows``, each unless the stored row is newer (``WRITE_IF_NOT_NEWER`` by its SHA,
    ``CHUNK`` keys a call: load it with ``SCRIPT LOAD``); each call replies 1 (written), 0 (kept) or -1 per key.

    On a Redis Cluster pipeline a call takes only consecutive rows whose keys share a hash slot (Feast's keys carry
    no hash tag, so mostly one row a call), each sent to its master by the pipeline."""
    for run in slot_runs([row.key for row in rows], CHUNK, is_cluster(pipe)):
        chunk = rows[run.start:run.stop]
        args: list[Any] = [TS_FIELD, len(FEATURE_FIELDS), *FEATURE_FIELDS]
        for row in chunk:
            args += [row.ts, row.seconds, row.nanos, *row.values]
        pipe.execute_command("EVALSHA", WRITE_SHA, len(chunk), *(row.key for row in chunk), *args)
