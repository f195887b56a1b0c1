"""Feature store benchmarks: materialization into Redis vs raw pipelined HSET, and historical retrieval vs a
hand-written DuckDB ASOF JOIN. Both sides run in the same process against the same data and the same Redis."""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from mlplatform.stores import embedded_redis

FEATURES = ["f_count", "f_sum", "f_mean", "f_ratio", "f_flag"]
START = datetime(2026, 10, 1, tzinfo=UTC)


def make_table(rows: int, entities: int, seed: int = 0) -> pd.DataFrame:
    """A feature table with ``rows`` rows spread over ``entities`` customers and 30 days."""
    rng = np.random.default_rng(seed)
    ts = pd.Timestamp(START) + pd.to_timedelta(rng.integers(0, 30 * 86_400 * 10**6, rows), unit="us")
    return pd.DataFrame(
        {
            "customer_id": rng.integers(1, entities + 1, rows).astype("int64"),
            "f_count": rng.integers(0, 50, rows).astype("int64"),
            "f_sum": rng.random(rows) * 1000,
            "f_mean": rng.random(rows) * 100,
            "f_ratio": rng.random(rows),
            "f_flag": rng.integers(0, 2, rows).astype("int64"),
            "event_timestamp": ts,
            "created_timestamp": ts,
        }
    ).sort_values("event_timestamp", ignore_index=True)


def _store(workdir: Path, parquet: Path, redis_addr: str, skip_dedup: bool = False):
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, RepoConfig, ValueType
    from feast.infra.online_stores.redis import RedisOnlineStoreConfig
    from feast.repo_config import RegistryConfig
    from feast.types import Float64, Int64

    config = RepoConfig(
        project="bench",
        provider="local",
        registry=RegistryConfig(path=str(workdir / "registry.db"), cache_ttl_seconds=60),
        offline_store={"type": "duckdb"},
        online_store=RedisOnlineStoreConfig(connection_string=redis_addr, skip_dedup=skip_dedup),
        entity_key_serialization_version=3,
        repo_path=str(workdir),
    )
    store = FeatureStore(config=config)
    customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.INT64)
    source = FileSource(path=str(parquet), timestamp_field="event_timestamp", created_timestamp_column="created_timestamp")
    view = FeatureView(
        name="bench_view",
        entities=[customer],
        ttl=timedelta(days=7),
        schema=[Field(name=f, dtype=Int64 if f in ("f_count", "f_flag") else Float64) for f in FEATURES],
        source=source,
    )
    store.apply([customer, view])
    return store, view


def _materialize_vs_floor(table: pd.DataFrame, workdir: Path, skip_dedup: bool) -> dict:
    import redis as redis_py

    parquet = workdir / "bench_features.parquet"
    table.to_parquet(parquet, index=False)
    with embedded_redis() as addr:
        host, port = addr.split(":")
        client = redis_py.Redis(host=host, port=int(port))
        store, view = _store(workdir / ("skip" if skip_dedup else "dedup"), parquet, addr, skip_dedup)
        t0 = time.perf_counter()
        store.materialize(START - timedelta(days=1), START + timedelta(days=31), feature_views=["bench_view"])
        feast_s = time.perf_counter() - t0
        keys = list(client.scan_iter(count=10_000))
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
        payload = list(zip(keys, pipe.execute(), strict=True))
        client.flushdb()
        # the floor: exactly the same key/field/value writes, pipelined raw HSETs
        t0 = time.perf_counter()
        for i in range(0, len(payload), 10_000):
            pipe = client.pipeline(transaction=False)
            for key, mapping in payload[i : i + 10_000]:
                pipe.hset(key, mapping=mapping)
            pipe.execute()
        floor_s = time.perf_counter() - t0
        written = client.dbsize()
    return {"feast_s": feast_s, "floor_s": floor_s, "keys": len(keys), "written": written}


def _retrieval_vs_asof(table: pd.DataFrame, entity_rows: int, workdir: Path) -> dict:
    parquet = workdir / "bench_features.parquet"
    table.to_parquet(parquet, index=False)
    rng = np.random.default_rng(1)
    entities = pd.DataFrame(
        {
            "customer_id": rng.integers(1, table["customer_id"].max() + 1, entity_rows).astype("int64"),
            "event_timestamp": pd.Timestamp(START)
            + pd.to_timedelta(rng.integers(0, 35 * 86_400 * 10**6, entity_rows), unit="us"),
        }
    )
    entities["event_timestamp"] = entities["event_timestamp"].dt.as_unit("us")
    with embedded_redis() as addr:
        store, _ = _store(workdir / "retrieval", parquet, addr)
        t0 = time.perf_counter()
        feast_df = store.get_historical_features(entity_df=entities, features=[f"bench_view:{f}" for f in FEATURES]).to_df()
        feast_s = time.perf_counter() - t0
    con = duckdb.connect()
    con.register("entities", entities)
    t0 = time.perf_counter()
    asof = con.sql(
        f"""
        SELECT e.customer_id, e.event_timestamp,
               {", ".join(f"CASE WHEN f.event_timestamp >= e.event_timestamp - INTERVAL 7 DAY THEN f.{c} END AS {c}" for c in FEATURES)}
        FROM entities e ASOF LEFT JOIN read_parquet('{parquet}') f
          ON e.customer_id = f.customer_id AND e.event_timestamp >= f.event_timestamp
        """
    ).df()
    asof_s = time.perf_counter() - t0
    key = ["customer_id", "event_timestamp"]
    a = feast_df.sort_values(key).reset_index(drop=True)
    b = asof.sort_values(key).reset_index(drop=True)
    mismatches = int(sum((~np.isclose(a[c].astype(float), b[c].astype(float), equal_nan=True)).sum() for c in FEATURES))
    return {"feast_s": feast_s, "asof_s": asof_s, "mismatches": mismatches}


def run(quick: bool = False) -> list[dict]:
    """Materialization and retrieval figures (1M rows / 100k entities; a tenth of that with quick)."""
    rows, entities = (100_000, 10_000) if quick else (1_000_000, 100_000)
    entity_rows = entities
    table = make_table(rows, entities)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for skip in (False, True):
            m = _materialize_vs_floor(table, work, skip)
            label = "skip_dedup" if skip else "default"
            note = f"{rows:,} rows -> {m['keys']:,} keys; Feast {m['feast_s']:.2f}s vs raw HSET {m['floor_s']:.2f}s"
            out += [
                {"benchmark": f"materialize ({label})", "metric": "rows read/s", "value": rows / m["feast_s"],
                 "unit": "rows/s", "note": note},
                {"benchmark": f"materialize ({label})", "metric": "keys written/s", "value": m["keys"] / m["feast_s"],
                 "unit": "keys/s", "note": f"floor {m['keys'] / m['floor_s']:,.0f} keys/s"},
                {"benchmark": f"materialize ({label})", "metric": "time vs raw HSET floor", "value": m["feast_s"] / m["floor_s"],
                 "unit": "x", "note": "goal <= 2x"},
            ]
        r = _retrieval_vs_asof(table, entity_rows, work)
        out += [
            {"benchmark": "historical retrieval", "metric": "Feast get_historical_features", "value": r["feast_s"],
             "unit": "s", "note": f"{entity_rows:,} entity rows x {len(FEATURES)} features over {rows:,} rows"},
            {"benchmark": "historical retrieval", "metric": "hand-written DuckDB ASOF JOIN", "value": r["asof_s"],
             "unit": "s", "note": f"{r['mismatches']} mismatching values between the two"},
            {"benchmark": "historical retrieval", "metric": "Feast vs ASOF JOIN", "value": r["feast_s"] / r["asof_s"],
             "unit": "x", "note": "goal <= 1.5x"},
        ]
    return out


if __name__ == "__main__":
    for row in run(quick=True):
        print(row)
