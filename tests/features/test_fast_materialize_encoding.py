"""The fast engine's encoders against the oracles they must match: protobuf's own serialization and Feast's key
encoding, on random and edge-case values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest
from feast.infra.online_stores.helpers import _redis_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from google.protobuf.timestamp_pb2 import Timestamp

from mlplatform.features import fast_materialize as fm

RNG = np.random.default_rng(3)
INT64_EDGES = [0, 1, -1, 127, 128, 2**31 - 1, -(2**31), 2**53 + 1, 2**63 - 1, -(2**63)]


def _chunked(values, typ) -> pa.ChunkedArray:
    half = len(values) // 2  # two chunks, as Parquet reads may give
    return pa.chunked_array([pa.array(values[:half], typ), pa.array(values[half:], typ)])


def _proto(field: str, values) -> list[bytes]:
    return [b"" if v is None else Value(**{field: v}).SerializeToString() for v in values]


def test_int64_matches_protobuf():
    values = INT64_EDGES + [None] + RNG.integers(-(2**62), 2**62, 500).tolist()
    assert fm.encode_int(_chunked(values, pa.int64())) == _proto("int64_val", values)


def test_int32_matches_protobuf():
    values = [0, -1, 5, 2**31 - 1, -(2**31), None] + RNG.integers(-(2**31), 2**31, 300).tolist()
    assert fm.encode_int(_chunked(values, pa.int32()), fm.TAG_INT32) == _proto("int32_val", values)


def test_double_matches_protobuf_and_nan_is_missing():
    values = [0.0, -0.0, 1.5, float("inf"), float("-inf"), 1e-310, None] + RNG.normal(size=300).tolist()
    got = fm.encode_double(_chunked(values + [float("nan")], pa.float64()))
    assert got == _proto("double_val", values) + [b""]


def test_float_bool_string_match_protobuf():
    floats = [0.0, 1.25, -3.5, None] + RNG.normal(size=50).astype(np.float32).tolist()
    assert fm.encode_float(_chunked(floats, pa.float32())) == _proto("float_val", floats)
    bools = [True, False, None, True]
    assert fm.encode_bool(_chunked(bools, pa.bool_())) == _proto("bool_val", bools)
    strings = ["", "FR", None, "é" * 200, "x" * 20_000, "FR"]
    assert fm.encode_string(_chunked(strings, pa.string())) == _proto("string_val", strings)


def test_timestamps_match_protobuf_from_datetime():
    base = datetime(2026, 10, 1, tzinfo=UTC)
    stamps = [datetime(1970, 1, 1, tzinfo=UTC), datetime(1969, 12, 31, 23, 59, 59, 5, tzinfo=UTC), base,
              base + timedelta(microseconds=1)] + [base + timedelta(microseconds=int(x))
                                                   for x in RNG.integers(0, 10**13, 300)]
    micros = np.array([(s - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) for s in stamps])
    expected = []
    for s in stamps:
        ts = Timestamp()
        ts.FromDatetime(s)
        expected.append(ts.SerializeToString())
    assert fm.encode_timestamps(micros) == expected
    assert [fm.timestamp_nanos(b) for b in expected] == [int(m) * 1000 for m in micros]


@pytest.mark.parametrize("kind", ["int64", "int32", "string", "two keys"])
def test_entity_keys_match_feast(kind):
    ints = INT64_EDGES + RNG.integers(-(2**40), 2**40, 200).tolist()
    if kind == "int64":
        cols, types = {"customer_id": _chunked(ints, pa.int64())}, {"customer_id": fm.VT_INT64}
        protos = [EntityKey(join_keys=["customer_id"], entity_values=[Value(int64_val=v)]) for v in ints]
    elif kind == "int32":
        small = [v for v in ints if -(2**31) <= v < 2**31]
        cols, types = {"id": _chunked(small, pa.int32())}, {"id": fm.VT_INT32}
        protos = [EntityKey(join_keys=["id"], entity_values=[Value(int32_val=v)]) for v in small]
    elif kind == "string":
        strs = [f"c-{v}" for v in ints] + ["", "é"]
        cols, types = {"name": _chunked(strs, pa.string())}, {"name": fm.VT_STRING}
        protos = [EntityKey(join_keys=["name"], entity_values=[Value(string_val=v)]) for v in strs]
    else:  # join keys are sorted by name in the key: give them out of order
        cols = {"merchant_id": _chunked(ints, pa.int64()), "customer_id": _chunked(ints[::-1], pa.int64())}
        types = {"merchant_id": fm.VT_INT64, "customer_id": fm.VT_INT64}
        protos = [EntityKey(join_keys=["merchant_id", "customer_id"],
                            entity_values=[Value(int64_val=m), Value(int64_val=c)])
                  for m, c in zip(ints, ints[::-1], strict=True)]
    expected = [_redis_key("fraud", p, entity_key_serialization_version=3) for p in protos]
    assert fm.encode_entity_keys(cols, types, "fraud") == expected


def test_resp_framed_output_is_prefix_plus_bulk_string_of_the_plain_bytes():
    ints = _chunked(INT64_EDGES + [None], pa.int64())
    doubles = _chunked([1.5, None, float("nan"), -2.0], pa.float64())
    strings = _chunked(["", None, "é" * 600, "FR"], pa.string())
    bools = _chunked([True, None, False], pa.bool_())
    micros = RNG.integers(-(10**12), 10**16, 200)
    cases = [(fm.encode_int, ints), (fm.encode_double, doubles), (fm.encode_string, strings), (fm.encode_bool, bools)]
    for encode, col in cases:
        assert encode(col, resp_prefix=b"P") == [b"P" + fm.resp_arg(v) for v in encode(col)]
    framed = fm.encode_timestamps(micros, resp_prefix=b"T")
    assert framed == [b"T" + fm.resp_arg(v) for v in fm.encode_timestamps(micros)]
    ids = {"customer_id": _chunked(INT64_EDGES, pa.int64())}
    types = {"customer_id": fm.VT_INT64}
    plain = fm.encode_entity_keys(ids, types, "p")
    assert fm.encode_entity_keys(ids, types, "p", resp=True) == [fm.resp_arg(k) for k in plain]
