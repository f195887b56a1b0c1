"""Consumers as real processes (the `mlplatform` console script): one SIGKILLed in the middle of its batches, then a
new one takes over, and every event is in the logs exactly once; SIGTERM finishes the batch in hand and exits 0;
two consumers at once share the work. Oracles: the events put on the stream and Redis's own XINFO/XPENDING."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import process_environ
from tests.streaming.conftest import GROUP, STREAM, expected_logs, group_info, make_events, stored_logs, xadd_all

MLPLATFORM = Path(sys.executable).parent / "mlplatform"
pytestmark = pytest.mark.slow


def _consumer(settings, name: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([str(MLPLATFORM), "stream", "run", "--consumer", name, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=process_environ(settings))


def _wait_read(client, at_least: int, proc: subprocess.Popen, timeout: float = 60.0) -> int:
    """Poll XINFO GROUPS until the group read ``at_least`` entries; the entries read then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            read = group_info(client)["entries-read"] or 0
        except Exception:  # the stream or the group does not exist yet
            read = 0
        if read >= at_least:
            return read
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.002)
    raise AssertionError(f"the consumer did not read {at_least} entries in {timeout} s")


def _applied(output: str) -> int:
    return int(re.search(r"applied ([\d,]+) events", output).group(1).replace(",", ""))


def test_a_consumer_killed_mid_batch_loses_nothing_and_duplicates_nothing(stream_settings, redis_db):
    settings = stream_settings(stream_batch_size=25)
    events = make_events(20_000, customers=200, seed=11)
    xadd_all(redis_db, events)
    killed_pending = 0
    for attempt in range(5):  # until a kill lands between a batch's read and its acknowledgement
        proc = _consumer(settings, f"doomed-{attempt}", "--quiet", "--no-trim")
        read = _wait_read(redis_db, group_info(redis_db)["entries-read"] + 2_000 if attempt else 2_000, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        killed_pending = redis_db.xpending(STREAM, GROUP)["pending"]
        assert read < 20_000 and group_info(redis_db)["entries-read"] < 20_000, "killed too late to tell"
        if killed_pending:
            break
    assert killed_pending > 0, "no kill landed inside a batch in 5 attempts"
    applied_before = sum(len(v) for v in stored_logs(redis_db).values())
    assert 0 < applied_before < 20_000

    done = subprocess.run([str(MLPLATFORM), "stream", "run", "--consumer", "heir", "--quiet", "--claim-idle", "0",
                           "--idle-exit", "1"], capture_output=True, text=True, env=process_environ(settings),
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert redis_db.xpending(STREAM, GROUP)["pending"] == 0
    info = group_info(redis_db)
    assert info["entries-read"] == 20_000 and info["lag"] == 0
    logs = stored_logs(redis_db)
    assert logs == expected_logs(events)  # every event exactly once, with its time
    per_customer: dict[int, set[str]] = {}
    for e in events:
        per_customer.setdefault(e.customer_id, set()).add(e.transaction_id)
    for customer, ids in per_customer.items():
        assert redis_db.zcard(f"mlplatform:activity:fraud:{customer}") == len(ids)


def test_sigterm_finishes_the_batch_acknowledges_and_exits_0(stream_settings, redis_db):
    settings = stream_settings(stream_batch_size=20)
    events = make_events(20_000, customers=100, seed=12)
    xadd_all(redis_db, events)
    proc = _consumer(settings, "polite")
    _wait_read(redis_db, 1_000, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "stopped: signal" in out and "Traceback" not in err
    info = group_info(redis_db)
    assert info["pending"] == 0 and 0 < info["entries-read"] < 20_000
    assert stored_logs(redis_db) == expected_logs(events[:info["entries-read"]])  # stream order: exactly those


def test_two_consumers_share_the_work(stream_settings, redis_db):
    settings = stream_settings(stream_batch_size=50)
    redis_db.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    procs = [_consumer(settings, name, "--quiet", "--idle-exit", "3") for name in ("left", "right")]
    deadline = time.monotonic() + 60
    while len(redis_db.xinfo_consumers(STREAM, GROUP)) < 2:  # both are waiting for entries
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.02)
    events = make_events(10_000, customers=150, seed=13)
    for i in range(0, len(events), 250):
        xadd_all(redis_db, events[i:i + 250])
        time.sleep(0.01)
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    applied = [_applied(out) for out, _ in outputs]
    assert all(n > 0 for n in applied), applied
    assert sum(applied) == 10_000  # each entry delivered to one of them, none twice
    assert stored_logs(redis_db) == expected_logs(events)
    assert redis_db.xpending(STREAM, GROUP)["pending"] == 0
