"""Feast's Redis online-store layout, as the fast materializer writes it and the service reads it.

One Redis hash per entity key: key = serialized entity key (Feast's ``serialize_entity_key``) + project name;
fields = murmur3 of ``<view>:<feature>`` holding a ValueProto, plus ``_ts:<view>`` holding a protobuf Timestamp
of the row's event time. A transaction at time t is scored with what was known at t − ``SCORING_OFFSET``: the
offline store (``transaction_entity_rows``) and the online reader use the same offset, so a transaction's
features never include itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
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
