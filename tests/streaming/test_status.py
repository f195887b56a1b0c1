"""`mlplatform stream status` reports what Redis itself says (oracle: XLEN, XINFO GROUPS, XPENDING, XINFO CONSUMERS
read directly), as a table and as JSON; Redis down is exit code 5 with a one-line message, no traceback."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

from tests.conftest import make_settings
from tests.streaming.conftest import GROUP, STREAM, group_info, make_events, xadd_all


def test_status_matches_what_redis_reports(cli, stream_settings, redis_db):
    settings = stream_settings(stream_batch_size=50)
    events = make_events(400, customers=10, seed=31)
    xadd_all(redis_db, events)
    res = cli(settings, ["stream", "run", "--quiet", "--consumer", "worker", "--max-events", "150", "--no-trim"])
    assert res.exit_code == 0, res.output
    redis_db.xreadgroup(GROUP, "stuck", {STREAM: ">"}, count=30)  # read, never acknowledged
    redis_db.xadd(f"{STREAM}:dead", {"source_id": "1-0", "reason": "test"})

    res = cli(settings, ["stream", "status", "--json"])
    assert res.exit_code == 0, res.output
    st = json.loads(res.output)
    info = group_info(redis_db)
    assert st["length"] == redis_db.xlen(STREAM) == 400
    assert (st["entries_read"], st["lag"], st["pending"]) == (info["entries-read"], info["lag"], info["pending"])
    assert (st["entries_read"], st["lag"], st["pending"]) == (180, 220, 30)
    assert st["oldest_pending_id"] == redis_db.xpending(STREAM, GROUP)["min"].decode()
    assert st["dead_letters"] == 1
    assert st["applied_last_minute"] == 150 and st["applied_total"] == 150
    consumers = {c["name"]: c for c in st["consumers"]}
    direct = {c["name"].decode(): c for c in redis_db.xinfo_consumers(STREAM, GROUP)}
    assert consumers.keys() == direct.keys() == {"worker", "stuck"}
    assert consumers["stuck"]["pending"] == direct["stuck"]["pending"] == 30
    assert consumers["worker"]["applied"] == 150 and consumers["stuck"]["applied"] == 0
    newest = datetime.fromtimestamp(max(e.ts for e in events[:150]), UTC)  # the 150 the worker applied
    assert st["newest_applied"] == newest.isoformat()

    res = cli(settings, ["stream", "status"])
    assert res.exit_code == 0, res.output
    assert re.search(r"lag \(not yet delivered\)\s*│\s*220\b", res.output), res.output
    assert re.search(r"pending \(delivered, not acknowledged\)\s*│\s*30\b", res.output), res.output


def test_status_of_a_stream_nobody_consumed_yet(cli, stream_settings, redis_db):
    res = cli(stream_settings(), ["stream", "status", "--json"])
    assert res.exit_code == 0, res.output
    st = json.loads(res.output)
    assert st["length"] == 0 and st["group_exists"] is False and st["lag"] is None and st["consumers"] == []
    res = cli(stream_settings(), ["stream", "status"])
    assert res.exit_code == 0 and "not created yet" in res.output, res.output


def test_status_with_redis_down_is_exit_5_without_a_traceback(cli, tmp_path):
    res = cli(make_settings(tmp_path, redis_timeout_seconds=0.5), ["stream", "status"])
    assert res.exit_code == 5, res.output
    assert "Redis" in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) <= 3, res.output
