"""Feast's Redis online-store layout, as the fast materializer writes it and the service reads it.

One Redis hash per entity key: key = serialized entity key (Feast's ``serialize_entity_key``) + project name;
fields = murmur3 of ``<view>:<feature>`` holding a ValueProto, plus ``_ts:<view>`` holding a protobuf Timestamp
of the row's event time. A transaction at time t is scored with what was known at t − ``SCORING_OFFSET``: the
offline store (``transaction_entity_rows``) and the online reader use the same offset, so a transaction's
features never include itself.

Beside the data, in the same database, the hash ``MATERIALIZED_KEY`` holds each view's materialized watermark
(``Watermark``, field ``<project>:<view>``): what Redis itself holds, so a wiped or restored Redis is noticed by
``mlplatform materialize`` (which repairs it) and by the service's ``/readyz`` (not ready).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

SCORING_OFFSET = timedelta(microseconds=1)
SCORING_OFFSET_US = SCORING_OFFSET // timedelta(microseconds=1)
# Feast value types stored as int64 inside serialized entity keys
INT_KEY_TYPES = frozenset({"Int64", "Int32", "UnixTimestamp"})


def feature_field(view_name: str, feature: str) -> bytes:
    """The hash field of one feature of a view (Feast's ``_mmh3("<view>:<feature>")``)."""
    from feast.infra.online_stores.helpers import _mmh3

    return _mmh3(f"{view_name}:{feature}")


def timestamp_field(view_name: str) -> str:
    """The hash field holding the event time of a view's row."""
    return f"_ts:{view_name}"


def entity_key(join_keys: Sequence[str], key_types: Sequence[str], values: Sequence[Any], project: bytes,
               key_version: int) -> bytes:
    """The Redis key of one entity: Feast's serialized entity key followed by the project name."""
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    protos = [Value(int64_val=int(v)) if t in INT_KEY_TYPES else Value(string_val=str(v))
              for v, t in zip(values, key_types, strict=True)]
    entity = EntityKey(join_keys=list(join_keys), entity_values=protos)
    return serialize_entity_key(entity, entity_key_serialization_version=key_version) + project


def timestamp_nanos(serialized: bytes) -> int:
    """Nanoseconds since the epoch of a stored ``_ts`` field (as Feast compares them)."""
    from google.protobuf.timestamp_pb2 import Timestamp

    ts = Timestamp.FromString(serialized)
    return ts.seconds * 1_000_000_000 + ts.nanos


def timestamp_micros(serialized: bytes) -> int:
    """Microseconds since the epoch of a stored ``_ts`` field."""
    return timestamp_nanos(serialized) // 1000


def decode_value(serialized: bytes) -> Any:
    """A stored feature value (ValueProto) as a Python value; None for a null."""
    from feast.protos.feast.types.Value_pb2 import Value

    val = Value.FromString(serialized)
    kind = val.WhichOneof("val")
    return None if kind is None or kind == "null_val" else getattr(val, kind)


# --- the materialized watermark ----------------------------------------------------------------------------------
MATERIALIZED_KEY = "mlplatform:materialized"  # a hash: field materialized_field(project, view) -> Watermark JSON


def materialized_field(project: str, view_name: str) -> str:
    """The field of ``MATERIALIZED_KEY`` holding one view's watermark."""
    return f"{project}:{view_name}"


@dataclass(frozen=True)
class Watermark:
    """What Redis holds of one view: every entity's latest row up to ``end`` landed (``keys``: how many entities
    the offline store has for the view up to ``end``). Written by ``mlplatform materialize`` once a view's rows
    have all landed, before the registry records the interval: a wiped Redis has none, a restored snapshot an
    older one. Its JSON is deterministic (no wall-clock time): a repaired Redis equals a clean one byte for byte."""

    end: datetime
    keys: int

    def encode(self) -> bytes:
        """The stored JSON: ``{"end": ISO-8601 UTC with microseconds, "keys": N}``."""
        end = self.end.astimezone(UTC).isoformat(timespec="microseconds")
        return json.dumps({"end": end, "keys": int(self.keys)}, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes | str | None) -> Watermark | None:
        """A stored watermark; None when absent or unreadable (either way Redis cannot be trusted for the view)."""
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            end = datetime.fromisoformat(data["end"])
            return cls(end if end.tzinfo else end.replace(tzinfo=UTC), int(data["keys"]))
        except (ValueError, TypeError, KeyError):
            return None


def project_watermarks(project: str, fields: Mapping[bytes | str, bytes | str]) -> dict[str, Watermark | None]:
    """The watermarks of ``project``'s views in an ``HGETALL MATERIALIZED_KEY`` reply, by view name (None: the
    field is there but unreadable)."""
    prefix = materialized_field(project, "")
    out: dict[str, Watermark | None] = {}
    for name, value in fields.items():
        text = name.decode("utf-8", "replace") if isinstance(name, bytes) else name
        if text.startswith(prefix):
            out[text[len(prefix):]] = Watermark.decode(value)
    return out
