"""`mlplatform stream status --json` (docs/cli-json.md): one document on stdout whose values are what the table
shows and what Redis reports (XLEN, XINFO GROUPS read directly); Redis down is exit 5 with an error document."""

from __future__ import annotations

import json
import re

from mlplatform import stores
from mlplatform.errors import OnlineStoreUnavailable
from tests.conftest import make_settings
from tests.streaming.conftest import GROUP, STREAM, group_info, make_events, xadd_all


def _doc(res) -> dict:
    assert res.stdout.count("\n") == 1, res.stdout
    return json.loads(res.stdout)


def test_json_and_table_show_the_same_values(cli, stream_settings, redis_db):
    settings = stream_settings(stream_batch_size=40)
    xadd_all(redis_db, make_events(120, customers=5, seed=41))
    res = cli(settings, ["stream", "run", "--quiet", "--consumer", "w1", "--max-events", "80", "--no-trim"])
    assert res.exit_code == 0, res.output

    table, out = cli(settings, ["stream", "status"]), cli(settings, ["stream", "status", "--json"])
    assert table.exit_code == out.exit_code == 0, out.output
    st = _doc(out)
    info = group_info(redis_db)
    assert (st["length"], st["lag"], st["entries_read"]) == (redis_db.xlen(STREAM), info["lag"], info["entries-read"])
    assert (st["stream"], st["group"]) == (STREAM, GROUP)
    for label, key in (("length", "length"), (r"lag \(not yet delivered\)", "lag"),
                       ("entries read by the group", "entries_read"), ("applied in total", "applied_total")):
        assert re.search(rf"{label}\s*│\s*{st[key]:,}\b", table.output), (label, table.output)
    assert re.search(rf"newest event time applied\s*│\s*{re.escape(st['newest_applied'])}", table.output)
    assert st["newest_applied"].endswith("+00:00")
    (worker,) = st["consumers"]
    assert worker["name"] == "w1" and worker["applied"] == 80 and re.search(r"w1\s*│\s*0\s*│.*│\s*80\b", table.output)


def test_redis_down_is_an_error_document_and_exit_5(cli, tmp_path):
    settings = make_settings(tmp_path, redis_timeout_seconds=0.5)
    table, out = cli(settings, ["stream", "status"]), cli(settings, ["stream", "status", "--json"])
    assert table.exit_code == out.exit_code == 5
    err = _doc(out)["error"]
    assert err["exit_code"] == 5 and "Redis" in err["message"]
    assert issubclass(getattr(stores, err["type"]), OnlineStoreUnavailable)  # the class the command raised
    assert table.stdout == "" and "Redis" in table.stderr
