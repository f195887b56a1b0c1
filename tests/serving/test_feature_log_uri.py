"""Feature logs on another filesystem (MLPLATFORM_FEATURE_LOGS_URI): the writer keeps its local spool (write-ahead
file, parts written with fsync + rename) and ships each complete part to the URI, deleting the local copy only after
the put; an outage of the target never loses a row (parts wait on disk and are shipped when it answers, or at the
next start); a replay after a crash skips the rows of parts already shipped; the real service's answered requests
land at a ``memory://`` URI; monitoring reads them back from there.

Oracles: the rows each test builds (or the answers the client received), read back from the written objects with
plain fsspec + pyarrow (not the platform's readers), and the same rows written by a writer with the local default.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import fsspec
import pyarrow.parquet as pq
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from mlplatform.contracts.feature_log import encode_feature_log, write_log_table
from mlplatform.filesystems import Location, open_location
from serving.feature_log import FeatureLogWriter, WriterEvents, encode_wal_rows
from tests.serving.conftest import make_txns, set_aliases, txn_body

T0 = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
DROP = ("logged_at",)  # equal by construction; compared apart


def _row(i: int) -> dict:
    return {"request_id": f"r{i:04d}", "logged_at": T0 + timedelta(seconds=i), "transaction_id": f"t{i}",
            "customer_id": 100 + i, "merchant_id": 7, "amount": 10.0 + i, "transaction_ts": 1_790_000_000 + i,
            "request_fields": None, "model_name": "fraud", "model_version": 1, "role": "golden", "served": True,
            "fallback": False, "fallback_reason": None, "cached": False, "prediction": 0.25, "missing": [],
            "stale": [], "future": [], "latency_ms": 1.5, "features": {"x": float(i), "y": 2.0 * i}}


def _objects(url: str) -> list[dict]:
    """Every row of every part under ``url`` (a memory:// or file:// folder), read with plain fsspec + pyarrow."""
    fs, root = fsspec.core.url_to_fs(url)
    rows = []
    for path in sorted(fs.glob(f"{root}/date=*/part-*.parquet")):
        with fs.open(path, "rb") as fh:
            rows.extend(pq.read_table(fh).to_pylist())
    return sorted(rows, key=lambda r: r["request_id"])


def _local_rows(root: Path) -> list[dict]:
    rows = []
    for path in sorted(root.glob("date=*/part-*.parquet")):
        rows.extend(pq.read_table(path).to_pylist())
    return sorted(rows, key=lambda r: r["request_id"])


def _wait(predicate, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _memory_url(name: str) -> str:
    return f"memory://{name}-{uuid.uuid4().hex[:8]}/feature_logs"


class FlakyMemory(MemoryFileSystem):
    """fsspec's in-memory filesystem whose puts fail (as an unreachable object store's would) while ``down``."""

    protocol = "flakymemory"
    down = threading.Event()

    def put_file(self, lpath, rpath, *args, **kwargs):
        if self.down.is_set():
            raise ConnectionError("the store does not answer")
        return super().put_file(lpath, rpath, *args, **kwargs)


def _flaky(name: str) -> Location:
    root = f"/{name}-{uuid.uuid4().hex[:8]}"
    return Location(FlakyMemory(skip_instance_cache=True), root, f"flakymemory://{root.lstrip('/')}")


@pytest.mark.parametrize("scheme", ["memory", "file"])
def test_parts_land_at_the_uri_and_equal_what_the_local_default_writes(tmp_path, scheme):
    url = _memory_url("equal") if scheme == "memory" else (tmp_path / "shared" / "feature_logs").as_uri()
    rows = [_row(i) for i in range(230)]
    default = FeatureLogWriter(tmp_path / "default", 100, 0.05, wal_dir=tmp_path / "default" / "_wal")
    shipped = FeatureLogWriter(tmp_path / "spool", 100, 0.05, wal_dir=tmp_path / "spool" / "_wal",
                               target=open_location(url, None, "MLPLATFORM_FEATURE_LOGS_URI"))
    for writer in (default, shipped):
        writer.start()
        for i in range(0, len(rows), 23):
            assert writer.write(rows[i:i + 23])
        writer.close()

    there, local = _objects(url), _local_rows(tmp_path / "default")
    assert [r["request_id"] for r in there] == [r["request_id"] for r in rows]  # every row, once
    assert there == local  # the same rows, values and types as the local default writes
    assert [r["logged_at"] for r in there] == [r["logged_at"] for r in rows]
    assert _local_rows(tmp_path / "spool") == []  # shipped parts are gone from the spool
    assert not list((tmp_path / "spool" / "_wal").glob("seg-*.jsonl"))  # the write-ahead file is done with
    if scheme == "file":  # the put to a local folder is a rename: no temp file left
        assert not [p for p in (tmp_path / "shared").rglob("*") if p.name.endswith(".tmp")]


def test_an_outage_of_the_target_loses_no_row_and_fills_no_memory(tmp_path):
    target = _flaky("outage")
    failures = []
    events = WriterEvents(write_failed=failures.append)
    writer = FeatureLogWriter(tmp_path / "spool", 50, 0.05, wal_dir=tmp_path / "spool" / "_wal", target=target,
                              max_queue_rows=120, events=events)
    FlakyMemory.down.set()
    try:
        writer.start()
        rows = [_row(i) for i in range(300)]
        for i in range(0, 300, 30):  # more rows than the queue holds: they leave memory for local parts
            assert writer.write(rows[i:i + 30]), "a row was refused while the target was down"
            _wait(lambda: writer.backlog == 0)
        _wait(lambda: "ship" in failures)
        assert len(_local_rows(tmp_path / "spool")) == 300  # on the local disk, complete
        assert not target.fs.glob(f"{target.root}/**/*.parquet")  # nothing reached the target
        assert writer.rows_dropped == 0
    finally:
        FlakyMemory.down.clear()
    writer.shipper.wake()  # rather than wait out the backoff (up to 5 s)
    _wait(lambda: not list((tmp_path / "spool").glob("date=*/part-*.parquet")))
    writer.close()
    there = []
    for path in target.fs.glob(f"{target.root}/date=*/part-*.parquet"):
        with target.fs.open(path, "rb") as fh:
            there.extend(pq.read_table(fh).column("request_id").to_pylist())
    assert sorted(there) == [r["request_id"] for r in rows]


def test_parts_left_at_shutdown_are_shipped_at_the_next_start(tmp_path):
    target = _flaky("restart")
    spool, wal = tmp_path / "spool", tmp_path / "spool" / "_wal"
    FlakyMemory.down.set()
    try:
        first = FeatureLogWriter(spool, 40, 0.05, wal_dir=wal, target=target)
        first.start()
        first.write([_row(i) for i in range(100)])
        first.close(timeout=2.0)
    finally:
        FlakyMemory.down.clear()
    assert len(_local_rows(spool)) == 100  # kept locally, not lost
    assert not target.fs.glob(f"{target.root}/**/*.parquet")
    second = FeatureLogWriter(spool, 40, 0.05, wal_dir=wal, target=target)
    second.start()
    second.close()
    assert _local_rows(spool) == []
    got = []
    for path in target.fs.glob(f"{target.root}/date=*/part-*.parquet"):
        with target.fs.open(path, "rb") as fh:
            got.extend(pq.read_table(fh).column("request_id").to_pylist())
    assert sorted(got) == [f"r{i:04d}" for i in range(100)]


def test_a_replay_skips_rows_already_shipped(tmp_path):
    """A writer died after shipping one part of its segment: the next one replays only the other rows."""
    url = _memory_url("replay")
    target = open_location(url, None, "MLPLATFORM_FEATURE_LOGS_URI")
    spool, wal = tmp_path / "spool", tmp_path / "spool" / "_wal"
    wal.mkdir(parents=True)
    segment = "seg-20261102T120000000000-1-0badc0de"
    rows = [_row(i) for i in range(60)]
    (wal / f"{segment}.jsonl").write_bytes(encode_wal_rows(rows))
    write_log_table(target, encode_feature_log(rows[:25]).table, when=T0, tag=f"{segment}-1")  # shipped already
    writer = FeatureLogWriter(spool, 100, 0.05, wal_dir=wal, target=target)
    writer.start()
    writer.close()
    assert writer.rows_replayed == 35
    assert [r["request_id"] for r in _objects(url)] == [r["request_id"] for r in rows]  # each row exactly once
    assert not list(wal.glob("seg-*.jsonl")) and _local_rows(spool) == []


def _samples(text: str) -> dict[str, float]:
    """Unlabelled samples of a Prometheus exposition: name -> value."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, _, value = line.partition(" ")
            out[name] = float(value)
    return out


def test_the_service_ships_every_answered_request_to_the_uri(serving_settings, trained_models, online_world):
    from fastapi.testclient import TestClient

    from monitoring.logs import LogWindow, screen_window
    from serving.app import create_app

    url = _memory_url("service")
    settings = serving_settings(feature_logs_uri=url)
    set_aliases(settings, golden=trained_models.versions[0])
    txns = make_txns(online_world, 40, seed=11, when=trained_models.scoring_time)
    with TestClient(create_app(settings)) as client:
        answers = []
        for row in txns.itertuples():
            response = client.post("/v1/predict", json=txn_body(row))
            assert response.status_code == 200, response.text
            answers.append(response.json())
        # while it runs, /metrics says the parts went out: shipped counted, none left waiting
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            metrics = _samples(client.get("/metrics").text)
            if metrics.get("mlplatform_feature_log_parts_shipped_total", 0) >= 1 and not metrics.get(
                    "mlplatform_feature_log_parts_waiting", 1) and _objects(url):
                break
            time.sleep(0.2)
        assert metrics["mlplatform_feature_log_parts_shipped_total"] >= 1, metrics
        assert metrics["mlplatform_feature_log_parts_waiting"] == 0, metrics
    logged = [r for r in _objects(url) if r["served"]]
    assert sorted(r["request_id"] for r in logged) == sorted(a["request_id"] for a in answers)
    by_id = {r["request_id"]: r for r in logged}
    for answer in answers:
        assert by_id[answer["request_id"]]["prediction"] == pytest.approx(answer["score"], abs=1e-12)
    assert not list(settings.layout.feature_logs_dir.glob("date=*/part-*.parquet"))  # shipped, not left locally
    # monitoring reads them back from the URI
    window = LogWindow(datetime.now(UTC) - timedelta(hours=1), datetime.now(UTC) + timedelta(minutes=1))
    read = screen_window(settings, window)
    assert sorted(read.frame["request_id"]) == sorted(a["request_id"] for a in answers)
