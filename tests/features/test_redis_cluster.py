"""The write side on a Redis Cluster (3 masters, this run's own): what our fast materializer, the event-log backfill
and the activity rows' scripts write there, against independent oracles.

* Feast's own engine (RedisOnlineStore with ``redis_type: redis_cluster``) and the fast engine, each into the
  emptied cluster: every key, field and value byte for byte the same.
* Feast's ``get_online_features`` on the cluster: every entity's values equal pandas' latest row per entity up to
  the end, over the Parquet feature tables.
* The event logs backfilled on the cluster: the raw transactions of their interval, and the same as on a single
  Redis; the activity rows' scripts read and write the same rows on both.
* A master that dies: a typed ``OnlineStoreUnavailable`` naming it, no traceback.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import subprocess
import time
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
import redis
from feast.protos.feast.types.Value_pb2 import Value
from google.protobuf.timestamp_pb2 import Timestamp

from mlplatform.contracts.activity_log import COVERAGE_KEY, log_key
from mlplatform.errors import OnlineStoreUnavailable
from mlplatform.features import activity_rows
from mlplatform.features.definitions import apply_definitions
from mlplatform.features.event_logs import backfill_event_logs
from mlplatform.features.fast_materialize import resp_arg, write_rows
from mlplatform.features.materialize import materialize
from mlplatform.features.pipelines import raw_watermark
from mlplatform.features.repo import feast_project
from mlplatform.settings import RedisAddress
from mlplatform.stores import bounded_redis_cluster, open_feature_store
from tests.conftest import CLUSTER_SCRIPT, _free_cluster_base, make_settings, redis_dump

BATCH_VIEWS = ("customer_activity", "customer_profile", "merchant_risk", "merchant_profile")
ENTITY = {"customer_activity": "customer_id", "customer_profile": "customer_id", "merchant_risk": "merchant_id",
          "merchant_profile": "merchant_id"}


def cluster_dump(client) -> dict[bytes, object]:
    """Every key of every master of a cluster with its content (``redis_dump``'s, master by master: SCAN only
    sees the keys of the master it runs on)."""
    out: dict[bytes, object] = {}
    for node in client.get_primaries():
        part = redis_dump(client.get_redis_connection(node))
        assert not out.keys() & part.keys()
        out.update(part)
    return out


def wait_until_every_master_is_ok(client, seconds: float = 20.0) -> None:
    """Until every master says ``cluster_state:ok`` (a new cluster's masters learn the slot map one by one)."""
    deadline = time.monotonic() + seconds
    for node in client.get_primaries():
        while client.get_redis_connection(node).execute_command("CLUSTER INFO").get("cluster_state") != "ok":
            assert time.monotonic() < deadline, f"{node.name} is not ok after {seconds:g} s"
            time.sleep(0.05)


@pytest.fixture(scope="module")
def on_cluster(redis_cluster, world_dir, tmp_path_factory):
    """The small world materialized into the emptied cluster by Feast's engine (dumped), then, the cluster emptied
    again, by the fast engine (dumped, and left there). Yields (fast settings, Feast's dump, the fast dump, end)."""
    world = tmp_path_factory.mktemp("cluster-world") / "world"
    shutil.copytree(world_dir, world, ignore=shutil.ignore_patterns(
        "registry*.db*", "audit", "models", "feature_logs", "reports", "pipelines", "monitoring", ".embedded-redis"))
    end = raw_watermark(world).to_pydatetime()
    dumps = {}
    settings = {}
    for engine in ("feast", "fast"):
        client = redis_cluster.client()
        wait_until_every_master_is_ok(client)
        client = redis_cluster.flush()
        settings[engine] = make_settings(world, materialize_engine=engine, redis_addr=redis_cluster.addr,
                                         redis_cluster=True, registry=world / f"registry_{engine}.db")
        apply_definitions(settings[engine], validate=False)
        results = materialize(settings[engine], end=end)
        assert {r.view: r.engine for r in results if r.view in BATCH_VIEWS} == dict.fromkeys(BATCH_VIEWS, engine)
        assert all(r.rows > 0 for r in results if r.view in BATCH_VIEWS)
        dumps[engine] = cluster_dump(client)
        client.close()
    yield settings["fast"], dumps["feast"], dumps["fast"], end
    redis_cluster.flush().close()


def test_fast_engine_writes_byte_identical_rows_on_the_cluster(on_cluster, redis_cluster):
    _, feast_dump, fast_dump, _ = on_cluster
    assert len(feast_dump) > 300  # the entities' rows, the event logs, the watermarks and the logs' coverage
    assert fast_dump.keys() == feast_dump.keys()
    assert fast_dump == feast_dump  # every field name and value, byte for byte
    client = redis_cluster.client()
    per_master = [client.get_redis_connection(n).dbsize() for n in client.get_primaries()]
    assert len(per_master) == 3 and min(per_master) > len(fast_dump) // 6  # spread over every master
    client.close()


def _latest(settings, view: str, end: datetime) -> pd.DataFrame:
    """Brute force: the latest row per entity with event time <= end of a view's Parquet table."""
    table = pd.read_parquet(settings.layout.features_dir / f"{view}.parquet")
    table = table[table["event_timestamp"] <= pd.Timestamp(end)]
    return table.sort_values("event_timestamp", kind="stable").groupby(ENTITY[view]).tail(1).set_index(ENTITY[view])


def test_online_equals_latest_offline_after_materializing_into_the_cluster(on_cluster):
    settings, _, _, end = on_cluster
    settings.export_feast_env()
    store = open_feature_store(settings)
    checked = 0
    for view in BATCH_VIEWS:
        latest = _latest(settings, view, end)
        features = [f.name for f in store.get_feature_view(view).features]
        entity = ENTITY[view]
        online = store.get_online_features(features=[f"{view}:{f}" for f in features],
                                           entity_rows=[{entity: int(k)} for k in latest.index]).to_dict()
        assert online[entity] == [int(k) for k in latest.index]
        for name in features:
            for key, got in zip(latest.index, online[name], strict=True):
                want = latest.loc[key, name]
                if pd.isna(want):
                    assert got is None or (isinstance(got, float) and math.isnan(got)), (view, key, name)
                else:
                    assert got == pytest.approx(want), (view, key, name)
                checked += 1
    assert checked > 1000


def test_event_logs_and_activity_rows_match_a_single_redis(on_cluster, redis_cluster, redis_db, redis_dbs):
    settings, _, fast_dump, end = on_cluster
    project = feast_project(settings.feature_repo)
    single = redis_db
    loaded = backfill_event_logs(single, project, settings.layout.raw_dir, end, backdated=pd.Timedelta(
        days=settings.stream_backdated_days).to_pytimedelta())
    single_dump = redis_dump(single)
    prefix = log_key(project, 0)[:-1]
    logs = {k: v for k, v in fast_dump.items() if k.startswith(prefix)}
    assert logs == {k: v for k, v in single_dump.items() if k.startswith(prefix)}
    assert fast_dump[COVERAGE_KEY.encode()] == single_dump[COVERAGE_KEY.encode()]

    # the oracle: the raw transactions of the backfilled interval, one member per transaction
    tx = pd.read_parquet(settings.layout.raw_dir / "transactions")
    ts_us = pd.to_datetime(tx["event_timestamp"], utc=True).astype("datetime64[us, UTC]").astype("int64")
    lo = int((pd.Timestamp(loaded.start) - pd.Timestamp(0, tz=UTC)) // pd.Timedelta(microseconds=1))
    hi = int((pd.Timestamp(loaded.end) - pd.Timestamp(0, tz=UTC)) // pd.Timedelta(microseconds=1))
    tx, ts_us = tx[(ts_us >= lo) & (ts_us < hi)], ts_us[(ts_us >= lo) & (ts_us < hi)]
    want: dict[bytes, list] = {}
    for (t, c, m, a), us in zip(tx[["transaction_id", "customer_id", "merchant_id", "amount"]].itertuples(
            index=False), ts_us, strict=True):
        want.setdefault(log_key(project, int(c)), []).append((f"{t}|{int(m)}|{float(a)!r}".encode(), float(us)))
    assert len(want) > 50
    assert {k: sorted(v, key=lambda e: (e[1], e[0])) for k, v in want.items()} == logs

    # the activity rows' scripts: read the same rows from both, write them byte for byte the same
    cluster = redis_cluster.client()
    customers = sorted(int(k.rsplit(b":", 1)[1]) for k in logs)[:120]
    results = {}
    for name, client in (("cluster", cluster), ("single", single)):
        for script in activity_rows.SCRIPTS:
            client.script_load(script)
        pipe = client.pipeline(transaction=False)
        activity_rows.queue_row_reads(pipe, project, customers)
        rows, uncovered = activity_rows.rows_from_replies(pipe.execute(), customers)
        feast_rows = activity_rows.encode_rows(project, rows)
        for row in feast_rows:
            client.delete(row.key)
        planted = feast_rows[0].key  # a newer row than the script's: kept
        newer = Timestamp(seconds=4_102_444_800).SerializeToString()  # 2100-01-01
        client.hset(planted, mapping={activity_rows.TS_FIELD: newer,
                                      activity_rows.FEATURE_FIELDS[0]: Value(int64_val=7).SerializeToString()})
        pipe = client.pipeline(transaction=False)
        activity_rows.queue_writes(pipe, feast_rows)
        replies = [r for chunk in pipe.execute() for r in chunk]
        again = client.pipeline(transaction=False)
        activity_rows.queue_writes(again, feast_rows)  # the same instant again: replaced, the same bytes
        replies_again = [r for chunk in again.execute() for r in chunk]
        stored = {row.key: client.hgetall(row.key) for row in feast_rows}
        results[name] = (rows, uncovered, replies, replies_again, stored)
    assert results["cluster"] == results["single"]
    rows, _, replies, replies_again, stored = results["cluster"]
    assert len(rows) > 50
    assert replies == replies_again == [0] + [1] * (len(rows) - 1)
    assert stored[feast_rows[0].key][activity_rows.TS_FIELD] == newer
    cluster.close()
    single.flushdb()


@pytest.mark.integration
@pytest.mark.cluster
def test_a_lost_master_is_a_typed_error_naming_it(tmp_path, world, cli):
    base = _free_cluster_base()
    args = ["--port", str(base), "--dir", str(tmp_path / "cluster")]
    up = subprocess.run(["bash", str(CLUSTER_SCRIPT), "up", *args], capture_output=True, text=True, timeout=60)
    assert up.returncode == 0, up.stderr
    try:
        addr = ",".join(f"127.0.0.1:{base + i}" for i in range(3))
        client = bounded_redis_cluster(RedisAddress.parse(addr), 2.0)
        wait_until_every_master_is_ok(client)
        settings = make_settings(world, redis_addr=addr, redis_cluster=True, redis_timeout_seconds=2.0)
        apply_definitions(settings, validate=False)
        keys = [b"k%d" % i for i in range(300)]
        write = ([resp_arg(k) for k in keys], [resp_arg(b"_ts:v") + resp_arg(b"\x08\x01")] * len(keys),
                 [1_000_000_000] * len(keys), [[resp_arg(b"f") + resp_arg(b"\x20\x05")] * len(keys)], b"_ts:v")
        # a stale slot map (each slot believed on the next master): the masters answer MOVED, the batch is routed
        # again with a fresh map
        cache = client.nodes_manager.slots_cache
        masters = sorted({nodes[0].name for nodes in cache.values()})
        by_name = {nodes[0].name: nodes for nodes in cache.values()}
        for slot, nodes in cache.items():
            cache[slot] = by_name[masters[(masters.index(nodes[0].name) + 1) % len(masters)]]
        assert write_rows(client, *write) == (len(keys), 0)
        assert write_rows(client, *write) == (0, len(keys))  # the same instant is kept (Feast's rule)
        per_master = {n.name: client.get_redis_connection(n).dbsize() for n in client.get_primaries()}
        assert sum(per_master.values()) == len(keys) and min(per_master.values()) > 50
        lost = client.get_node_from_key(keys[0])
        with contextlib.suppress(redis.RedisError):
            client.get_redis_connection(lost).shutdown(nosave=True)
        with pytest.raises(OnlineStoreUnavailable, match=f"127.0.0.1:{lost.port}.*failed"):
            write_rows(client, *write)
        client.close()
        # the whole command: exit code 5 and one line naming what failed, no traceback
        result = cli(settings, ["materialize"])
        assert result.exit_code == 5, result.output
        assert "Traceback" not in result.output and f"{lost.port}" in result.output, result.output
    finally:
        subprocess.run(["bash", str(CLUSTER_SCRIPT), "down", *args], capture_output=True, timeout=60)


def test_replayed_stored_rows_land_on_the_cluster_as_on_a_single_redis(on_cluster, redis_cluster, redis_db,
                                                                       redis_dbs):
    """The live replay's rows (``monitoring.stored_rows``: the world at a period's start, then the period's rows on
    the replay's clock, moved forward): the same keys and bytes on the cluster as on a single Redis."""
    from mlplatform.features.fast_materialize import online_client
    from monitoring.stored_rows import StoredRows

    fast, _, _, end = on_cluster
    start, shift = end - timedelta(days=3), timedelta(days=2)
    middle = int((end - timedelta(days=1)).timestamp() * 1_000_000)
    single = make_settings(fast.data_dir, redis_addr=redis_dbs.addr(0), registry=fast.registry)
    dumps = {}
    for name, settings in (("cluster", fast), ("single", single)):
        if name == "cluster":
            redis_cluster.flush().close()
        else:
            redis_db.flushdb()
        store = open_feature_store(settings)
        client = online_client(store)
        stored = StoredRows(settings, store, client, start, end, shift)
        steps = [stored.rewind(), stored.advance(middle)]
        dump = cluster_dump(redis_cluster.client()) if name == "cluster" else redis_dump(redis_db)
        steps.append(stored.advance(int(end.timestamp() * 1_000_000)))
        dumps[name] = (steps, dump, cluster_dump(redis_cluster.client()) if name == "cluster" else redis_dump(redis_db))
        client.close()
    assert dumps["cluster"] == dumps["single"]
    steps, middle_dump, end_dump = dumps["cluster"]
    assert all(n > 0 for n in steps) and len(end_dump) > 100 and middle_dump != end_dump
    redis_db.flushdb()
