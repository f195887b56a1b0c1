"""Feast's Spark offline store and Spark compute engine (pyspark, local[2]) against the local profile's DuckDB side,
on bench/features.py's world (1M feature rows over 100k customers; --quick: a tenth):

* point-in-time retrieval: ``get_historical_features`` through a FeatureService, 100k entity rows, on the Spark
  offline store vs the ASOF DuckDB store (AsofDuckDBOfflineStore), same Parquet file, values compared;
* materialization into Redis: Feast's Spark compute engine vs the fast materializer (DuckDB + pipelined HSET), same
  Parquet file and the same embedded Redis, the two Redis states compared key by key.

Spark's figures include its per-job overhead (planning, Python workers, Arrow transfers); the session is started
before the clock runs.
"""

from __future__ import annotations

import tempfile
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from bench.features import FEATURES, START, bench_store, make_table, parquet_source
from mlplatform.stores import embedded_redis


def _store(workdir: Path, parquet: Path, redis_addr: str, engine: str):
    """A FeatureStore with one view over ``parquet`` and a service over it: DuckDB (ASOF store, local engine) or
    Spark (Feast's Spark offline store, SparkSource, Spark compute engine)."""
    from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

    from mlplatform.features.offline_store import STORE_TYPE

    if engine != "spark":
        return bench_store(workdir, redis_addr, parquet_source(parquet), offline_store=STORE_TYPE,
                           with_service=True)[0]
    source = SparkSource(name="bench_source", path=str(parquet), file_format="parquet",
                         timestamp_field="event_timestamp", created_timestamp_column="created_timestamp")
    return bench_store(workdir, redis_addr, source, offline_store="spark", batch_engine={"type": "spark.engine"},
                       with_service=True)[0]


def _entity_rows(table: pd.DataFrame, n: int) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    times = pd.Timestamp(START) + pd.to_timedelta(rng.integers(0, 35 * 86_400 * 10**6, n), unit="us")
    return pd.DataFrame({
        "customer_id": rng.integers(1, table["customer_id"].max() + 1, n).astype("int64"),
        "event_timestamp": times.as_unit("us"),
    })


def _retrieval(work: Path, parquet: Path, entities: pd.DataFrame) -> dict:
    """Seconds of get_historical_features (through the service) on each store, and how many values differ."""
    frames, times = {}, {}
    with embedded_redis() as addr:
        for engine in ("duckdb", "spark"):
            store = _store(work / f"retrieval_{engine}", parquet, addr, engine)
            service = store.get_feature_service("bench_service")
            for run in ("cold", "warm"):  # cold: the first in a process (what a `dataset build` pays)
                t0 = time.perf_counter()
                frames[engine] = store.get_historical_features(entity_df=entities.copy(), features=service).to_df()
                times[engine, run] = time.perf_counter() - t0
    key = ["customer_id", "event_timestamp"]
    a, b = (frames[e].assign(event_timestamp=pd.to_datetime(frames[e]["event_timestamp"], utc=True))
            .sort_values(key).reset_index(drop=True) for e in ("spark", "duckdb"))
    assert len(a) == len(b) == len(entities)
    differ = int(sum((~np.isclose(a[c].astype(float), b[c].astype(float), equal_nan=True)).sum() for c in FEATURES))
    return {"times": times, "mismatches": differ}


def _materialize(work: Path, parquet: Path) -> dict:
    """Seconds of Feast's Spark engine and of the fast materializer over the same rows; keys whose hashes differ."""
    import redis as redis_py

    from mlplatform.features.fast_materialize import materialize_view

    start, end = START - timedelta(days=1), START + timedelta(days=31)
    times, dumps = {}, {}
    with embedded_redis() as addr:
        host, port = addr.split(":")
        client = redis_py.Redis(host=host, port=int(port))
        for engine in ("spark", "duckdb"):
            client.flushdb()
            store = _store(work / f"materialize_{engine}", parquet, addr, engine)
            t0 = time.perf_counter()
            if engine == "spark":
                store.materialize(start, end, feature_views=["bench_view"])
            else:
                materialize_view(store, store.get_feature_view("bench_view"), start, end)
            times[engine] = time.perf_counter() - t0
            keys = list(client.scan_iter(count=10_000))
            pipe = client.pipeline(transaction=False)
            for k in keys:
                pipe.hgetall(k)
            dumps[engine] = dict(zip(keys, pipe.execute(), strict=True))
    spark, fast = dumps["spark"], dumps["duckdb"]
    differ = sum(spark.get(k) != v for k, v in fast.items()) + len(spark.keys() - fast.keys())
    return {"times": times, "keys": len(fast), "mismatches": differ}


def run(quick: bool = False) -> list[dict]:
    """Retrieval and materialization figures, Spark local[2] vs DuckDB (1M rows / 100k entities; quick: a tenth)."""
    from mlplatform.settings import Settings
    from mlplatform.spark_session import spark_session

    rows, entities = (100_000, 10_000) if quick else (1_000_000, 100_000)
    table = make_table(rows, entities)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        settings = Settings(_env_file=None, data_dir=work, offline_store="spark")
        t0 = time.perf_counter()
        session = spark_session(settings)  # started before the clocks run: a process pays it once
        startup = time.perf_counter() - t0
        master = session.sparkContext.master
        parquet = work / "bench_features.parquet"
        table.to_parquet(parquet, index=False, coerce_timestamps="us")  # Spark reads no nanosecond timestamps
        r = _retrieval(work, parquet, _entity_rows(table, entities))
        m = _materialize(work, parquet)
    rt, mt, keys = r["times"], m["times"], m["keys"]
    shape = f"{entities:,} entity rows x {len(FEATURES)} features over {rows:,} rows, through a FeatureService"
    out = [{"benchmark": "Spark session", "metric": "start-up", "value": startup, "unit": "s",
            "note": f"pyspark {master}, once per process (JVM + SparkContext)"}]
    for engine, label in (("spark", f"Spark offline store, {master}"), ("duckdb", "AsofDuckDBOfflineStore")):
        for run in ("cold", "warm"):
            note = shape if run == "cold" else "the same call again in the same process"
            if engine == "spark" and run == "cold":
                note += f"; {r['mismatches']} values differ from DuckDB's"
            out.append({"benchmark": f"historical retrieval ({label})", "metric": f"get_historical_features, {run}",
                        "value": rt[engine, run], "unit": "s", "note": note})
    for run in ("cold", "warm"):
        out.append({"benchmark": "historical retrieval (Spark offline store)", "metric": f"time vs DuckDB, {run}",
                    "value": rt["spark", run] / rt["duckdb", run], "unit": "x",
                    "note": f"Spark {rt['spark', run]:.2f}s, DuckDB {rt['duckdb', run]:.2f}s; entity rows/s: Spark "
                            f"{entities / rt['spark', run]:,.0f}, DuckDB {entities / rt['duckdb', run]:,.0f}"})
    for engine, label in (("spark", f"Feast's Spark engine, {master}"), ("duckdb", "fast engine")):
        out.append({"benchmark": f"materialize ({label})", "metric": "rows read/s", "value": rows / mt[engine],
                    "unit": "rows/s", "note": f"{rows:,} rows -> {keys:,} keys in {mt[engine]:.2f}s"
                    + (f"; {m['mismatches']} keys differ from the fast engine's" if engine == "spark" else "")})
    out.append({"benchmark": "materialize (Feast's Spark engine)", "metric": "time vs fast engine",
                "value": mt["spark"] / mt["duckdb"], "unit": "x",
                "note": f"Spark {mt['spark']:.2f}s, fast {mt['duckdb']:.2f}s, same Parquet and Redis"})
    return out


if __name__ == "__main__":
    for row in run(quick=True):
        print(row)
