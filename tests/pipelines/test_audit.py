"""The audit log: atomic appends from concurrent processes, crash-safe, filterable from the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

from mlplatform.audit import audit_path, list_records, record
from mlplatform.files import read_jsonl
from tests.conftest import make_settings

WRITER = """
import sys
from pathlib import Path
from mlplatform.audit import record
from mlplatform.settings import Settings
settings = Settings(data_dir=Path(sys.argv[1]), actor=f"writer-{sys.argv[2]}")
pad = "x" * int(sys.argv[4])  # bigger than PIPE_BUF: atomicity cannot come from small writes
for i in range(int(sys.argv[3])):
    record(settings, "materialize", f"target-{sys.argv[2]}", details={"i": i, "pad": pad})
"""


def _writer(data_dir, name, n, pad):
    return subprocess.Popen([sys.executable, "-c", WRITER, str(data_dir), str(name), str(n), str(pad)], cwd=os.getcwd())


def test_concurrent_writers_in_processes_never_interleave(tmp_path):
    procs = [_writer(tmp_path, w, 150, 20_000) for w in range(4)]
    assert all(p.wait(60) == 0 for p in procs)
    rows, torn = read_jsonl(audit_path(make_settings(tmp_path)))
    assert torn == 0
    assert len(rows) == 600
    for w in range(4):
        mine = [r["details"]["i"] for r in rows if r["actor"] == f"writer-{w}"]
        assert mine == list(range(150)), "each writer's records are whole and in its order"
    assert all(len(r["details"]["pad"]) == 20_000 for r in rows)


def test_killed_writer_leaves_only_whole_records(tmp_path):
    settings = make_settings(tmp_path)
    proc = _writer(tmp_path, "victim", 1_000_000, 50_000)
    path = audit_path(settings)
    deadline = time.monotonic() + 30
    while (not path.exists() or path.stat().st_size < 2_000_000) and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    rows, _ = read_jsonl(path)
    assert len(rows) >= 10
    assert [r["details"]["i"] for r in rows] == list(range(len(rows)))  # nothing valid ignored, no gap
    # A crash mid-line (simulated: a torn fragment without newline) is skipped, and the next append is whole.
    with open(path, "ab") as fh:
        fh.write(b'{"time": "2026-11-01T00:00:00Z", "actor": "crash", "act')
    assert len(read_jsonl(path)[0]) == len(rows)
    record(settings, "apply", "after the crash")
    after, torn = read_jsonl(path)
    assert len(after) == len(rows) + 1 and torn == 1
    assert after[-1]["target"] == "after the crash"


def test_filters_and_cli(tmp_path, cli):
    settings = make_settings(tmp_path, actor="alice")
    record(settings, "apply", "registry", details={"feature_views": ["a"]})
    record(settings, "promote", "model fraud v2", reason="beats v1", actor="bob")
    record(settings, "rollback", "model fraud v1", reason="bad latency")
    assert [r.action for r in list_records(settings, action="promote")] == ["promote"]
    assert [r.actor for r in list_records(settings, actor="alice")] == ["alice", "alice"]
    assert [r.action for r in list_records(settings, limit=2)] == ["promote", "rollback"]
    future = datetime.now(UTC) + timedelta(hours=1)
    assert list_records(settings, since=future) == []
    rec = list_records(settings, action="rollback")[0]
    assert rec.reason == "bad latency" and rec.target == "model fraud v1" and rec.time.endswith("Z")

    out = cli(settings, ["audit", "--action", "promote", "--json"])
    assert out.exit_code == 0, out.output
    (line,) = out.output.strip().splitlines()
    assert json.loads(line)["actor"] == "bob"
    bad = cli(settings, ["audit", "--since", "not-a-time"])
    assert bad.exit_code == 2 and "Traceback" not in bad.output
