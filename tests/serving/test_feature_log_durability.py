"""The feature log loses nothing: a row that does not fit the schema is coerced or quarantined and dead-lettered
with its reason while the rest of its batch is written; a failing write is retried until the rows land; the queue
is bounded and what it refuses is counted; temp files of dead writers are removed at start; write-ahead segments a
dead writer left are replayed exactly once, and a live writer's never; and against a real `mlplatform serve`
process under load, every answered request has its row after a SIGTERM, and after a SIGKILL and a restart.

Oracles: the rows each test builds (their ids and values), read back with plain pyarrow / json from the files on
disk (not through the writer's readers), and, for the live service, the request ids of the 200 answers the
client itself received."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest

from serving.feature_log import FeatureLogWriter, WriteAheadSegment, WriterEvents, encode_wal_rows
from tests.conftest import process_environ
from tests.serving.conftest import free_port, set_aliases


def _row(i: int, **changes) -> dict:
    row = {"request_id": f"r{i}", "logged_at": datetime.now(UTC), "transaction_id": f"t{i}", "customer_id": 100 + i,
           "merchant_id": 7, "amount": 10.0 + i, "transaction_ts": 1_790_000_000 + i, "request_fields": None,
           "model_name": "fraud", "model_version": 1, "role": "golden", "served": True, "fallback": False,
           "fallback_reason": None, "cached": False, "prediction": 0.25, "missing": [], "stale": [], "future": [],
           "latency_ms": 1.5, "features": {"x": float(i), "y": 2.0 * i}}
    row.update(changes)
    return row


def _parquet_rows(root: Path) -> list[dict]:
    """Every row of every Parquet file under ``root/date=*``, read with plain pyarrow."""
    rows = []
    for path in sorted(root.glob("date=*/part-*.parquet")):
        rows.extend(pq.read_table(path).to_pylist())
    return rows


def _dead_letters(folder: Path) -> list[dict]:
    lines = []
    for path in sorted(folder.glob("*.jsonl")):
        lines.extend(json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return lines


class Recorder(WriterEvents):
    """WriterEvents that remember every call."""

    def __init__(self) -> None:
        self.calls: dict[str, list] = {"written": [], "dropped": [], "dead_lettered": [], "replayed": [],
                                       "write_failed": []}
        super().__init__(written=lambda n, p: self.calls["written"].append(n),
                         dropped=lambda n: self.calls["dropped"].append(n),
                         dead_lettered=lambda n, a: self.calls["dead_lettered"].append((n, a)),
                         replayed=lambda n: self.calls["replayed"].append(n),
                         write_failed=lambda t: self.calls["write_failed"].append(t))


def _wait(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


# --- bad rows ---------------------------------------------------------------------------------------------------
def test_unencodable_rows_are_coerced_or_quarantined_and_the_rest_of_the_batch_is_written(tmp_path):
    root, letters = tmp_path / "logs", tmp_path / "logs" / "_dead_letter"
    events = Recorder()
    writer = FeatureLogWriter(root, batch_rows=1000, flush_seconds=60.0, dead_letter_dir=letters, events=events)
    writer.start()
    good = [_row(i) for i in range(10)]
    bad_ts = _row(10, transaction_ts=10**20)  # the request: beyond int64
    bad_id = _row(11, customer_id=2**63)
    bad_amount = _row(12, amount="abc", features={"x": 10**400, "y": 1.0})  # 10**400 is beyond float64
    not_a_row = ["not", "a", "row"]
    writer.write(good[:5] + [bad_ts, bad_id] + good[5:] + [bad_amount, not_a_row])
    writer.close()

    rows = {r["request_id"]: r for r in _parquet_rows(root)}
    assert sorted(rows) == sorted(f"r{i}" for i in range(13))  # every mapping row is written, the list is not
    for r in good:
        got = rows[r["request_id"]]
        assert (got["transaction_ts"], got["customer_id"], got["amount"], got["x"], got["y"]) == (
            r["transaction_ts"], r["customer_id"], r["amount"], r["features"]["x"], r["features"]["y"])
    assert rows["r10"]["transaction_ts"] is None and rows["r10"]["customer_id"] == 110  # only the bad value
    assert rows["r11"]["customer_id"] is None and rows["r11"]["transaction_ts"] == 1_790_000_011
    assert rows["r12"]["amount"] is None and rows["r12"]["x"] is None and rows["r12"]["y"] == 1.0

    dead = {(d["row"]["request_id"] if isinstance(d["row"], dict) else "list"): d for d in _dead_letters(letters)}
    assert sorted(dead) == ["list", "r10", "r11", "r12"]
    assert dead["r10"]["action"] == "coerced" and dead["r10"]["row"]["transaction_ts"] == 10**20
    assert dead["r10"]["reasons"] == ["transaction_ts: 100000000000000000000 is out of the int64 range"]
    assert dead["r11"]["reasons"] == [f"customer_id: {2**63} is out of the int64 range"]
    assert len(dead["r12"]["reasons"]) == 2
    assert dead["r12"]["reasons"][0].startswith("amount: 'abc' is not a number")
    assert dead["r12"]["reasons"][1].startswith("features.x:") and "float64" in dead["r12"]["reasons"][1]
    assert dead["list"]["action"] == "quarantined" and dead["list"]["row"] == not_a_row
    assert sorted(events.calls["dead_lettered"]) == [(1, "quarantined"), (3, "coerced")]
    assert sum(events.calls["written"]) == 13 and writer.backlog == 0


# --- failed writes ----------------------------------------------------------------------------------------------
def test_a_failing_write_is_retried_with_backoff_until_the_rows_land(tmp_path, monkeypatch):
    import serving.feature_log as feature_log

    real = feature_log.write_log_table
    attempts: list[float] = []

    def flaky(*args, **kwargs):
        attempts.append(time.monotonic())
        if len(attempts) <= 2:
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(feature_log, "write_log_table", flaky)
    events = Recorder()
    root = tmp_path / "logs"
    writer = FeatureLogWriter(root, batch_rows=1000, flush_seconds=0.05, events=events)
    writer.start()
    writer.write([_row(i) for i in range(20)])
    _wait(lambda: len(attempts) >= 3)
    writer.write([_row(i) for i in range(20, 25)])  # rows keep arriving while the disk recovers
    writer.close()
    assert sorted(r["request_id"] for r in _parquet_rows(root)) == sorted(f"r{i}" for i in range(25))
    assert events.calls["write_failed"] == ["parquet", "parquet"]
    first = feature_log.RETRY_FIRST_SECONDS
    assert attempts[1] - attempts[0] >= 0.9 * first and attempts[2] - attempts[1] >= 0.9 * 2 * first  # backoff
    assert writer.backlog == 0 and not events.calls["dropped"]


def test_an_unwritable_folder_is_retried_and_the_rows_land_once_it_is_writable(tmp_path):
    root = tmp_path / "logs"
    root.mkdir()
    blocker = root / f"date={datetime.now(UTC):%Y-%m-%d}"
    blocker.write_text("a file where the day's folder belongs: no one (not even root) can write under it")
    writer = FeatureLogWriter(root, batch_rows=1000, flush_seconds=0.05)
    writer.start()
    writer.write([_row(i) for i in range(5)])
    _wait(lambda: writer.errors >= 2)
    assert writer.backlog == 5 and _parquet_rows(root) == []
    blocker.unlink()
    writer.close()
    assert sorted(r["request_id"] for r in _parquet_rows(root)) == [f"r{i}" for i in range(5)]
    assert writer.backlog == 0


def test_shutdown_keeps_unwritable_rows_in_the_write_ahead_file_for_the_next_start(tmp_path, monkeypatch):
    import serving.feature_log as feature_log

    real = feature_log.write_log_table

    def broken(*args, **kwargs):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(feature_log, "write_log_table", broken)
    root, wal = tmp_path / "logs", tmp_path / "logs" / "_wal"
    writer = FeatureLogWriter(root, flush_seconds=0.05, wal_dir=wal)
    writer.start()
    writer.write([_row(i) for i in range(7)])
    writer.close(timeout=1.5)
    assert _parquet_rows(root) == [] and len(list(wal.glob("seg-*.jsonl"))) == 1
    monkeypatch.setattr(feature_log, "write_log_table", real)
    events = Recorder()
    again = FeatureLogWriter(root, wal_dir=wal, events=events)
    again.start()
    again.close()
    assert sorted(r["request_id"] for r in _parquet_rows(root)) == [f"r{i}" for i in range(7)]
    assert events.calls["replayed"] == [7] and list(wal.glob("seg-*.jsonl")) == []


# --- the bounded queue ------------------------------------------------------------------------------------------
def test_the_queue_is_bounded_and_what_it_refuses_is_counted(tmp_path):
    events = Recorder()
    root = tmp_path / "logs"
    writer = FeatureLogWriter(root, max_queue_rows=5, flush_seconds=60.0, events=events)  # not started: nothing drains
    assert writer.write([_row(0), _row(1), _row(2)]) is True
    assert writer.write([_row(3), _row(4), _row(5)]) is False  # 3 + 3 > 5: refused whole, at once
    assert writer.write([_row(6), _row(7)]) is True
    assert writer.backlog == 5 and events.calls["dropped"] == [3] and writer.rows_dropped == 3
    writer.start()
    writer.close()
    assert sorted(r["request_id"] for r in _parquet_rows(root)) == ["r0", "r1", "r2", "r6", "r7"]
    assert writer.write([_row(8)]) is False and events.calls["dropped"] == [3, 1]  # after close: counted too


# --- start: temp files and write-ahead replay -------------------------------------------------------------------
def test_temp_files_of_dead_writers_are_removed_at_start(tmp_path):
    root = tmp_path / "logs"
    day = root / "date=2026-11-01"
    day.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    orphan = day / f".part-1.parquet.{dead_pid}-abcd1234.tmp"
    mine = day / f".part-2.parquet.{os.getpid()}-abcd1234.tmp"  # a live writer's (this process): kept
    old = root / f".part-3.parquet.{os.getpid()}-abcd1234.tmp"  # live pid but two hours old: left over
    odd = day / ".unrelated.tmp"  # no process id in the name: nobody can still be writing it
    kept = day / "part-4.parquet"
    for path in (orphan, mine, old, odd, kept):
        path.write_bytes(b"x")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    writer = FeatureLogWriter(root)
    writer.start()
    writer.close()
    assert writer.temp_files_removed == 3
    assert not orphan.exists() and not old.exists() and not odd.exists()
    assert mine.exists() and kept.exists()


def test_a_dead_writers_segment_is_replayed_once_skipping_rows_already_written_from_it(tmp_path):
    from mlplatform.contracts.feature_log import encode_feature_log, write_log_table

    root, wal = tmp_path / "logs", tmp_path / "logs" / "_wal"
    segment = WriteAheadSegment.create(wal)
    rows = [_row(i) for i in range(10)]
    segment.write(encode_wal_rows(rows))
    segment.write(b'{"request_id": "torn"')  # a line cut by the kill: skipped
    write_log_table(root, encode_feature_log(rows[:4]).table, tag=f"{segment.id}-1")  # written before the kill
    segment.close(delete=False)  # the process "dies": the lock goes, the file stays

    events = Recorder()
    writer = FeatureLogWriter(root, wal_dir=wal, events=events)
    writer.start()
    writer.close()
    got = [r["request_id"] for r in _parquet_rows(root)]
    assert sorted(got) == sorted(f"r{i}" for i in range(10))  # each once: r0..r3 not again
    assert events.calls["replayed"] == [6]
    assert list(wal.glob("seg-*.jsonl")) == []
    by_id = {r["request_id"]: r for r in _parquet_rows(root)}
    assert by_id["r7"]["logged_at"] == rows[7]["logged_at"] and by_id["r7"]["y"] == 14.0  # times survive JSON


def test_a_live_writers_segment_is_never_replayed_by_another_writer(tmp_path):
    root, wal = tmp_path / "logs", tmp_path / "logs" / "_wal"
    first = FeatureLogWriter(root, flush_seconds=60.0, wal_dir=wal)
    first.start()
    first.write([_row(i) for i in range(5)])
    second = FeatureLogWriter(root, flush_seconds=60.0, wal_dir=wal)  # a second worker process starting
    second.start()
    assert second.rows_replayed == 0 and _parquet_rows(root) == []
    assert len(list(wal.glob("seg-*.jsonl"))) == 2
    second.write([_row(i) for i in range(5, 8)])
    first.close()
    second.close()
    assert sorted(r["request_id"] for r in _parquet_rows(root)) == sorted(f"r{i}" for i in range(8))
    assert list(wal.glob("seg-*.jsonl")) == []


def test_rows_written_before_a_kill_are_replayed_by_the_next_writer(tmp_path):
    """A writer in its own process takes rows, then is SIGKILLed before its Parquet batch is due."""
    root, wal = tmp_path / "logs", tmp_path / "logs" / "_wal"
    script = f"""
import sys, time
from datetime import UTC, datetime
sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
from serving.feature_log import FeatureLogWriter
from tests.serving.test_feature_log_durability import _row
w = FeatureLogWriter({str(root)!r}, flush_seconds=600.0, wal_dir={str(wal)!r})
w.start()
for i in range(50):
    w.write([_row(i)])
print("written", flush=True)
time.sleep(600)
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "written"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
    assert _parquet_rows(root) == []
    writer = FeatureLogWriter(root, wal_dir=wal)
    writer.start()
    writer.close()
    assert sorted(r["request_id"] for r in _parquet_rows(root)) == sorted(f"r{i}" for i in range(50))


# --- a real service under load ----------------------------------------------------------------------------------
GRACEFUL = -signal.SIGTERM  # uvicorn shuts down gracefully on SIGTERM, then re-raises it: the exit says SIGTERM


class Service:
    """`mlplatform serve` as a process of its own."""

    def __init__(self, settings, port: int) -> None:
        self.settings = settings
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Service:
        cli = Path(sys.executable).with_name("mlplatform")
        self.log = self.settings.data_path / f"serve-{self.port}-{time.monotonic_ns()}.log"
        with open(self.log, "w") as out:  # a file, not a pipe: a chatty service never blocks on it
            self.proc = subprocess.Popen([str(cli), "serve", "--port", str(self.port), "--log-level", "warning"],
                                         env=process_environ(self.settings), stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError(f"the service did not start: {self.log.read_text()[-3000:]}")
            time.sleep(0.2)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


def load(url: str, bodies: list[dict], clients: int, stop_after: int | None = None,
         on_threshold=None) -> tuple[set[str], int]:
    """POST the bodies from ``clients`` threads; the request ids of the 200 answers, and how many failed. When
    ``stop_after`` answers have arrived, ``on_threshold()`` runs once (the signal), and the load goes on."""
    answered: set[str] = set()
    failed = 0
    lock = threading.Lock()
    fired = threading.Event()

    def client(k: int) -> None:
        nonlocal failed
        with httpx.Client(base_url=url, timeout=30) as c:
            for body in bodies[k::clients]:
                try:
                    r = c.post("/v1/predict", json=body)
                except httpx.HTTPError:
                    with lock:
                        failed += 1
                    continue
                with lock:
                    if r.status_code == 200:
                        answered.add(r.json()["request_id"])
                    else:
                        failed += 1
                    crossed = stop_after is not None and len(answered) >= stop_after and not fired.is_set()
                    if crossed:
                        fired.set()
                if crossed:
                    on_threshold()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answered, failed


def _bodies(n: int, when: int) -> list[dict]:
    return [{"customer_id": 1 + i % 60, "merchant_id": 10001 + i % 5, "amount": 5.0 + i % 97,
             "transaction_ts": when, "transaction_id": f"load-{i}"} for i in range(n)]


def _served_ids(settings) -> list[str]:
    rows = _parquet_rows(settings.layout.feature_logs_dir)
    return [r["request_id"] for r in rows if r["served"]]


@pytest.fixture()
def service_settings(serving_settings, trained_models):
    settings = serving_settings(feature_log_flush_seconds=2.0, serving_cache_size=0)
    set_aliases(settings, golden=trained_models.versions[0])
    return settings


def test_sigterm_under_load_every_answered_request_has_its_row(service_settings, trained_models):
    when = int(trained_models.scoring_time.timestamp())
    service = Service(service_settings, free_port()).start()
    metrics = httpx.get(f"{service.url}/metrics", timeout=5).text
    for name in ("mlplatform_feature_log_backlog", "mlplatform_feature_log_rows_dropped_total",
                 "mlplatform_feature_log_rows_dead_lettered_total", "mlplatform_feature_log_write_failures_total"):
        assert name in metrics
    answered, failed = load(service.url, _bodies(600, when), clients=8, stop_after=300,
                            on_threshold=lambda: service.signal(signal.SIGTERM))
    assert service.wait() == GRACEFUL
    logged = _served_ids(service_settings)
    assert len(answered) >= 300 and failed == 600 - len(answered)  # refused after the signal, not answered
    assert len(logged) == len(set(logged))  # no row twice
    assert set(logged) == answered  # N answered requests, N rows: the very same requests
    assert list(service_settings.layout.feature_log_wal_dir.glob("seg-*.jsonl")) == []  # nothing left to replay


def test_sigkill_under_load_loses_no_answered_row_after_the_restart(serving_settings, trained_models):
    settings = serving_settings(feature_log_flush_seconds=600.0, serving_cache_size=0)  # no batch is due: all in
    set_aliases(settings, golden=trained_models.versions[0])  # memory (and the write-ahead file) at the kill
    when = int(trained_models.scoring_time.timestamp())
    service = Service(settings, free_port()).start()
    answered, _ = load(service.url, _bodies(600, when), clients=8, stop_after=300,
                       on_threshold=lambda: service.signal(signal.SIGKILL))
    service.wait()
    assert len(answered) >= 300 and _served_ids(settings) == []  # nothing was in Parquet yet
    from fastapi.testclient import TestClient

    from serving.app import create_app

    with TestClient(create_app(settings)) as client:  # the service starts again (in this process, to save a
        assert client.get("/readyz").status_code == 200  # minute), replaying the killed one's write-ahead file
        metrics = client.get("/metrics").text
    replayed = [float(line.split()[-1]) for line in metrics.splitlines()
                if line.startswith("mlplatform_feature_log_rows_replayed_total ")]
    logged = _served_ids(settings)
    assert replayed == [len(logged)]  # every row came back from the write-ahead file
    assert len(logged) == len(set(logged))
    assert answered <= set(logged)  # every answered request has its row
    assert len(set(logged) - answered) <= 8  # at most the requests in flight at the kill (logged, never answered)
