"""The online store is reconciled, not trusted: after a `materialize --full` SIGKILLed at a random point, a wiped
Redis, or a partly written one, a plain incremental `materialize` leaves Redis equal, byte for byte (every key,
field and value, watermarks included), to a clean full materialization into this run's other database (the
oracle), and says what it reloaded."""

from __future__ import annotations

import queue
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis
from feast.infra.online_stores.helpers import _mmh3

from mlplatform.contracts.redis_layout import MATERIALIZED_KEY, Watermark, materialized_field
from mlplatform.errors import OnlineStoreUnavailable
from mlplatform.features.definitions import apply_definitions
from mlplatform.features.materialize import materialize
from mlplatform.stores import open_feature_store
from tests.conftest import make_settings, process_environ, redis_dump

ROOT = Path(__file__).resolve().parents[2]
MLPLATFORM = str(Path(sys.executable).parent / "mlplatform")
ACTIVITY_FEATURES = ["txn_count_1h", "txn_count_24h", "txn_count_7d", "amount_sum_24h", "amount_mean_24h",
                     "amount_sum_7d", "amount_mean_7d", "distinct_merchants_24h", "last_txn_epoch"]


def _diff(got: dict, want: dict) -> str:
    """A short description of how two dumps differ (for assertion messages)."""
    missing = [k for k in want if k not in got]
    extra = [k for k in got if k not in want]
    changed = [k for k in want if k in got and got[k] != want[k]]
    return f"{len(missing)} keys missing, {len(extra)} extra, {len(changed)} with other fields/values"


@pytest.fixture()
def pair(world, redis_dbs):
    """(settings, client) of the database under test, its registry saying every view was materialized, and the
    dump of a clean full materialization into the other database with a registry of its own (the oracle)."""
    settings = make_settings(world, redis_addr=redis_dbs.addr(0))
    clean = make_settings(world, redis_addr=redis_dbs.addr(1), registry=world / "registry_clean.db")
    client, clean_client = redis_dbs.flush(0), redis_dbs.flush(1)
    apply_definitions(clean, validate=False)
    materialize(clean, full=True, on_note=None)
    want = redis_dump(clean_client)
    clean_client.flushdb()
    apply_definitions(settings, validate=False)
    first = materialize(settings, on_note=None)
    assert sum(r.rows for r in first) > 150 and redis_dump(client) == want
    assert len(want) > 150 and want[MATERIALIZED_KEY.encode()]  # watermarks are part of the state
    yield settings, client, want
    client.flushdb()


def _incremental(settings) -> tuple[list, list[str]]:
    notes: list[str] = []
    return materialize(settings, on_note=notes.append), notes


def test_a_wiped_redis_is_reloaded_by_a_plain_incremental_run(pair):
    settings, client, want = pair
    client.flushdb()
    results, notes = _incremental(settings)
    assert redis_dump(client) == want, _diff(redis_dump(client), want)
    assert {r.view for r in results if r.repair} == {r.view for r in results} and sum(r.rows for r in results) > 150
    assert any(n.startswith("Redis lost customer_activity (no watermark): reloading from ") for n in notes), notes
    again, notes = _incremental(settings)
    assert all(r.rows == 0 and not r.repair for r in again) and notes == []  # repaired: trusted again


def test_a_view_lost_on_some_keys_with_its_watermark_is_reloaded(pair):
    settings, client, want = pair
    store = open_feature_store(settings)
    fields = [b"_ts:customer_activity", *(_mmh3(f"customer_activity:{f}") for f in ACTIVITY_FEATURES)]
    keys = [k for k, v in want.items() if b"_ts:customer_activity" in v][:60]
    for key in keys:
        client.hdel(key, *fields)
    client.hdel(MATERIALIZED_KEY, materialized_field(store.project, "customer_activity"))
    assert redis_dump(client) != want

    results, notes = _incremental(settings)
    assert redis_dump(client) == want, _diff(redis_dump(client), want)
    assert [r.view for r in results if r.repair] == ["customer_activity"], notes
    assert all(r.rows == 0 for r in results if r.view != "customer_activity")


def test_keys_lost_under_a_surviving_watermark_are_found_by_the_probe(pair):
    settings, client, want = pair
    fields = [b"_ts:merchant_risk", *(_mmh3(f"merchant_risk:{f}") for f in
                                      ("fraud_count_30d", "label_count_30d", "fraud_rate_30d"))]
    keys = [k for k, v in want.items() if b"_ts:merchant_risk" in v]
    for key in keys[: len(keys) // 2]:  # the small world has fewer entities than a probe samples: all are checked
        client.hdel(key, *fields)
    results, notes = _incremental(settings)
    assert redis_dump(client) == want, _diff(redis_dump(client), want)
    assert [r.view for r in results if r.repair] == ["merchant_risk"]
    assert f"{len(keys) // 2} of {len(keys)} sampled keys lack its row" in notes[0], notes


def test_an_older_watermark_than_the_registry_is_repaired(pair):
    settings, client, want = pair
    store = open_feature_store(settings)
    field = materialized_field(store.project, "customer_profile")
    mark = Watermark.decode(client.hget(MATERIALIZED_KEY, field))
    older = Watermark(mark.end.replace(year=mark.end.year - 1), mark.keys)  # as if a year-old snapshot came back
    client.hset(MATERIALIZED_KEY, field, older.encode())
    results, notes = _incremental(settings)
    assert redis_dump(client) == want, _diff(redis_dump(client), want)
    assert [r.view for r in results if r.repair] == ["customer_profile"]
    assert "is older than the registry's end" in notes[0]


class _Lines:
    """A subprocess's stdout lines, read by a thread, so the test can wait for one with a deadline."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            self.lines.put(line)

    def wait_for(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.05)
            except queue.Empty:
                continue
            self.seen.append(line)
            if text in line:
                return True
        return False


@pytest.mark.slow
def test_a_sigkilled_full_materialize_then_an_incremental_run_equals_a_clean_run(pair):
    """Bounded rounds, each: Redis wiped (the registry still says every view is done), `materialize --full` as a
    process of its own, SIGKILLed at a point (0.5 s in: while it starts; a short random delay into its second
    view; into its last view, Feast's engine), then a plain incremental run in this process."""
    settings, client, want = pair
    seed = random.randrange(1_000_000)
    rng = random.Random(seed)
    env = {**process_environ(settings), "PYTHONUNBUFFERED": "1", "PYTHONWARNINGS": "ignore"}
    n_views = len({k.split(b":", 1)[1] for k in want[MATERIALIZED_KEY.encode()]})
    points = [("0.5 s in", None, 0.5), ("in view 2", 2, rng.uniform(0.0, 0.15)),
              ("in the last view", n_views, rng.uniform(0.0, 1.0))]
    for label, view_no, delay in points:
        client.flushdb()
        proc = subprocess.Popen([MLPLATFORM, "materialize", "--full"], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        try:
            lines = _Lines(proc)
            if view_no is not None:
                assert lines.wait_for(f"({view_no}/{n_views})", 120), (label, lines.seen)
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(30) == -signal.SIGKILL, (label, seed, lines.seen)  # killed before it was done
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            proc.stdout.close()
        lost = redis_dump(client) != want  # a kill late in the last view may land after its last write
        results, notes = _incremental(settings)
        got = redis_dump(client)
        assert got == want, f"killed {label} (+{delay:.2f} s, seed {seed}): {_diff(got, want)}"
        if lost:  # it said what Redis lost, and loaded it: views' rows, or the event logs (backfilled last)
            reloaded_logs = any(n.startswith("event logs:") for n in notes)
            assert notes and (sum(r.rows for r in results) > 0 or reloaded_logs), (label, seed, notes)
        else:  # nothing was lost: nothing to say, nothing reloaded
            assert not [r for r in results if r.repair], (label, seed, notes)


def test_feast_engine_failing_on_redis_exits_5_with_a_clear_message(pair, cli, monkeypatch):
    from feast import FeatureStore

    settings, _, _ = pair

    def lost(*_args, **_kwargs):
        raise redis.TimeoutError("Timeout reading from socket")

    monkeypatch.setattr(FeatureStore, "materialize", lost)
    with pytest.raises(OnlineStoreUnavailable, match="did not take the materialized rows"):
        materialize(settings, full=True, views=["customer_realtime"], on_note=None)
    res = cli(settings, ["materialize", "--full", "--view", "customer_realtime"])
    assert res.exit_code == 5, res.output
    assert "did not take the materialized rows" in res.output and "Traceback" not in res.output
